//! `cart-admin`: the terminal admin console. Parses the options and hands
//! over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = cart_admin_tui::cli::Args::parse().resolve();
    match cart_admin_tui::run::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cart-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
