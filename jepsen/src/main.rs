//! The `certus-jepsen` command. For now it only explains itself: the runner that starts a
//! cluster, drives workloads and nemeses, and calls the checkers is not written yet.

const USAGE: &str = "\
certus-jepsen: Jepsen-style safety tests for certus

USAGE:
    certus-jepsen --help

The test runner (cluster start, clients, nemeses) is not implemented yet. The checkers
(bank, list-append, counter, set), the EDN history writer and the results report live in
the certus_jepsen library and are exercised by `cargo test -p certus-jepsen`.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("-h") | Some("--help") | Some("help") => print!("{USAGE}"),
        Some(other) => {
            eprint!("certus-jepsen: unknown argument '{other}'\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}
