//! The smallest valid cluster spec, for unit tests that need one: one
//! coordinator and three nodes per service, default ports and timings.

use cart_common::ClusterSpec;

pub const SPEC: &str = r#"
    [cluster]
    admin_token = "a"
    internal_secret = "s"
    [services.order]
    coordinators = 1
    nodes = 3
    [services.payment]
    coordinators = 1
    nodes = 3
    [services.stock]
    coordinators = 1
    nodes = 3
"#;

pub fn spec() -> ClusterSpec {
    match ClusterSpec::from_toml(SPEC) {
        Ok(spec) => spec,
        Err(e) => panic!("the test spec is valid: {e}"),
    }
}
