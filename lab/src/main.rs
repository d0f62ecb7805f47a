//! The `witmed-lab` binary: witmed's command line plus its test tooling (never installed at a hospital).

fn main() -> std::process::ExitCode {
    witmed_lab::cli::main()
}
