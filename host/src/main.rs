use std::process::ExitCode;

fn main() -> ExitCode {
    capstan::commands::main()
}
