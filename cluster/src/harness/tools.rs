//! Programs a test needs beyond the Rust toolchain (nginx, Prometheus,
//! promtool, tmux, kubectl, jongodb): where to find them, and one rule for
//! when a missing one fails and when it skips.

use std::path::PathBuf;

/// Installs every test program but jongodb (`scripts/test` runs it as root).
pub const INSTALL_TOOLS: &str = "scripts/install-test-tools";

/// `name` on `PATH`, or in `/usr/sbin` (Debian puts nginx there, outside a
/// normal user's `PATH`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `name` when it is installed; otherwise `missing(name, INSTALL_TOOLS)`.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    find_tool(name).or_else(|| missing(name, INSTALL_TOOLS))
}

/// What a test does without `what`: under CI (`CI=true`) it fails, naming
/// `install`, the project's script that installs it; elsewhere it prints why
/// it skips, and the caller returns.
pub fn missing<T>(what: &str, install: &str) -> Option<T> {
    assert!(
        !under_ci(),
        "{what} is missing under CI: {install} installs it"
    );
    eprintln!("skipping: {what} is not installed ({install} installs it)");
    None
}

/// Whether this runs under CI, where every test program must be there.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}
