//! Programs a test needs beyond the Rust toolchain (nginx, Prometheus,
//! promtool, tmux, kubectl, jongodb): one rule for when a missing one fails
//! and when it skips.

/// `found` when the program is there. When it is missing: under CI
/// (`CI=true`) the test fails, naming `install` (the project's script that
/// installs it); elsewhere it prints why it skips and returns `None`.
pub fn require_tool<T>(name: &str, found: Option<T>, install: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    assert!(
        !under_ci(),
        "{name} is missing under CI: it is installed by {install}"
    );
    eprintln!("skipping: {name} is not installed ({install} installs it)");
    None
}

/// Whether this runs under CI, where every test program must be there.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}
