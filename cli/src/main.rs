//! The `witmed` command: run a hospital node, import data, manage consent, ask queries.

fn main() -> std::process::ExitCode {
    witmed::main()
}
