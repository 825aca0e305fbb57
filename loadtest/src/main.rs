use clap::Parser;

fn main() -> anyhow::Result<()> {
    cart_loadtest::main_with(cart_loadtest::cli::Cli::parse())
}
