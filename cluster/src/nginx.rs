//! nginx as the balancer, as the seed had it (compose and Kubernetes use it;
//! `cart up` uses the built-in gateway): its configuration, generated from
//! the cluster spec. Prefix routing to each service's coordinators' public
//! ports only (admin ports are never upstreams), passive health (a failed
//! coordinator leaves rotation for a while) and retries on another
//! coordinator, safe because every request keeps one `X-Request-Id`.

use std::fmt::Write as _;
use std::path::Path;

use cart_common::{ClusterSpec, Service};

/// How long a coordinator that failed stays out of rotation.
const FAIL_TIMEOUT_SECS: u64 = 5;

/// An nginx.conf serving the cart API on `listen`, keeping its pid, logs and
/// temporary files under `dir`.
pub fn config(spec: &ClusterSpec, listen: &str, dir: &Path) -> String {
    let limits = &spec.limits;
    let d = dir.display();
    let mut out = String::new();
    let _ = write!(
        out,
        "# Generated from the cluster spec; do not edit.\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {d}/client_body;\n\
         \x20 proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n\
         \x20 # Keep the client's request id, or give the request one: a retry on\n\
         \x20 # another coordinator then applies once.\n\
         \x20 map $http_x_request_id $cart_request_id {{\n\
         \x20   \"\" $request_id;\n\
         \x20   default $http_x_request_id;\n\
         \x20 }}\n"
    );
    for service in Service::ALL {
        let _ = writeln!(out, "  upstream {service} {{");
        for c in spec.coordinators(service) {
            let _ = writeln!(
                out,
                "    server {} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECS}s;",
                c.public
            );
        }
        let _ = writeln!(out, "    keepalive 64;\n  }}");
    }
    let _ = writeln!(out, "  server {{\n    listen {listen};");
    for service in Service::ALL {
        let _ = write!(
            out,
            "    location {prefix} {{\n\
             \x20     proxy_pass http://{service};\n\
             \x20     proxy_http_version 1.1;\n\
             \x20     proxy_set_header Connection \"\";\n\
             \x20     proxy_set_header X-Request-Id $cart_request_id;\n\
             \x20     proxy_connect_timeout {connect}ms;\n\
             \x20     proxy_read_timeout {read}ms;\n\
             \x20     proxy_next_upstream error timeout http_502 non_idempotent;\n\
             \x20     proxy_next_upstream_tries {tries};\n\
             \x20   }}\n",
            prefix = service.path_prefix(),
            connect = limits.connect_timeout_ms,
            read = limits.gateway_timeout_ms,
            tries = spec.size(service).coordinators * 2,
        );
    }
    let _ = write!(
        out,
        "    location / {{\n\
         \x20     default_type application/json;\n\
         \x20     return 404 '{{\"error\":\"not_found\",\"message\":\"no such route\"}}';\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n"
    );
    out
}
