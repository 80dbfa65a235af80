fn main() -> std::process::ExitCode {
    gemfleet_agent::cli::main()
}
