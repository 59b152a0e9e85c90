//! The `certus-jepsen` command: parses arguments into a validated [`RunConfig`] and runs it.
//! Exits 0 when every workload and the convergence check are valid, 1 on any anomaly, 2 on a
//! usage error and 3 when the run could not be carried out (cluster never started, setup failed).

use std::path::PathBuf;
use std::time::Duration;

use certus_jepsen::runner::nemesis::NemesisKind;
use certus_jepsen::runner::workload::WorkloadKind;
use certus_jepsen::runner::{run, RunConfig, Target};

const USAGE: &str = "\
certus-jepsen: Jepsen-style safety tests for certus

USAGE:
    certus-jepsen run [OPTIONS]

Starts a certus cluster (each node with its own managed mariadbd), runs the workloads on every
node under faults, heals, checks convergence and judges the histories. Writes one EDN history
per workload, results.md, results.json and run.json to --out.

OPTIONS:
    --certus-bin PATH        certus binary [env CERTUS_BIN; default target/release/certus]
    --dir DIR                node data dirs and logs [default <out>/cluster]
    --out DIR                output dir [default jepsen-out]
    --nodes N                cluster size [default 3]
    --endpoints H:P,...      test these MySQL endpoints instead of starting certus (no nemesis)
    --galera-dir DIR         with --endpoints: endpoint i is the Galera node DIR/n<i> (started
                             by bench/lib.sh), so the kill and pause nemeses can fault its
                             mariadbd (restarted with --wsrep-recover, rejoining by IST)
    --user U --password P    workload account [default jepsen / jepsen-password]; created on
                             every managed backend, must already exist for --endpoints
    --seed N                 seed for the operation mix and the nemesis schedule [default 1]
    --time-limit SECS        length of the workload phase [default 60]
    --workloads LIST         bank,list-append,counter,oslo-counter,set [default all]
    --nemesis LIST           kill,kill-backend,pause,partition,combined,kill-leader,
                             isolate-leader or none [default kill,partition]
    --nemesis-interval SECS  quiet time before each fault [default 5]
    --fault-duration SECS    how long each fault lasts [default 8]
    --clients-per-node N     clients per workload per node [default 1]
    --op-timeout SECS        abandon an op after this long [default 10]
    --recovery-timeout SECS  bound on start, recovery and convergence waits [default 120]
    --consistency MODEL      snapshot-isolation (write skew accepted) or serializable
                             [default snapshot-isolation]
";

fn usage_error(message: &str) -> ! {
    eprint!("certus-jepsen: {message}\n\n{USAGE}");
    std::process::exit(2);
}

/// Raw `--flag value` pairs, before validation.
fn raw_args(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument '{flag}'"));
        };
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        out.push((name.to_owned(), value.clone()));
    }
    Ok(out)
}

fn secs(name: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("--{name}: '{v}' is not a number of seconds"))
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse::<T>()
        .map_err(|_| format!("--{name}: '{v}' is not a valid number"))
}

fn list<T>(name: &str, v: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).ok_or_else(|| format!("--{name}: unknown '{s}'")))
        .collect()
}

fn default_certus_bin() -> PathBuf {
    std::env::var_os("CERTUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/certus"))
}

fn config_from(args: &[(String, String)]) -> Result<RunConfig, String> {
    let get = |name: &str| {
        args.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    const KNOWN: [&str; 18] = [
        "galera-dir",
        "consistency",
        "certus-bin",
        "dir",
        "out",
        "nodes",
        "endpoints",
        "user",
        "password",
        "seed",
        "time-limit",
        "workloads",
        "nemesis",
        "nemesis-interval",
        "fault-duration",
        "clients-per-node",
        "op-timeout",
        "recovery-timeout",
    ];
    if let Some((unknown, _)) = args.iter().find(|(n, _)| !KNOWN.contains(&n.as_str())) {
        return Err(format!("unknown option --{unknown}"));
    }
    let out = PathBuf::from(get("out").unwrap_or("jepsen-out"));
    let target = match get("endpoints") {
        Some(list) => {
            let endpoints = list.split(',').map(str::to_owned).collect();
            match get("galera-dir") {
                Some(dir) => Target::Galera {
                    endpoints,
                    dir: PathBuf::from(dir),
                },
                None => Target::Endpoints(endpoints),
            }
        }
        None if get("galera-dir").is_some() => {
            return Err("--galera-dir needs --endpoints (one per node, in order)".into());
        }
        None => {
            let nodes: u64 = get("nodes").map_or(Ok(3), |v| number("nodes", v))?;
            if !(1..=9).contains(&nodes) {
                return Err("--nodes must be between 1 and 9".into());
            }
            let certus_bin = get("certus-bin").map_or_else(default_certus_bin, PathBuf::from);
            if !certus_bin.is_file() {
                return Err(format!(
                    "certus binary {} not found (build it, or pass --certus-bin / CERTUS_BIN)",
                    certus_bin.display()
                ));
            }
            Target::Certus {
                certus_bin,
                dir: get("dir").map_or_else(|| out.join("cluster"), PathBuf::from),
                nodes,
            }
        }
    };
    let mut config = RunConfig::new(target, out);
    if let Some(v) = get("seed") {
        config.seed = number("seed", v)?;
    }
    if let Some(v) = get("time-limit") {
        config.time_limit = secs("time-limit", v)?;
    }
    if let Some(v) = get("workloads") {
        config.workloads = list("workloads", v, WorkloadKind::parse)?;
    }
    if let Some(v) = get("nemesis") {
        config.nemeses = if v == "none" {
            Vec::new()
        } else {
            list("nemesis", v, NemesisKind::parse)?
        };
    }
    if let Some(v) = get("nemesis-interval") {
        config.nemesis_interval = secs("nemesis-interval", v)?;
    }
    if let Some(v) = get("fault-duration") {
        config.fault_duration = secs("fault-duration", v)?;
    }
    if let Some(v) = get("clients-per-node") {
        config.clients_per_node = number("clients-per-node", v)?;
    }
    if let Some(v) = get("op-timeout") {
        config.op_timeout = secs("op-timeout", v)?;
    }
    if let Some(v) = get("recovery-timeout") {
        config.recovery_timeout = secs("recovery-timeout", v)?;
    }
    if let Some(v) = get("consistency") {
        config.serializable = match v {
            "serializable" => true,
            "snapshot-isolation" => false,
            other => return Err(format!("--consistency: unknown model '{other}'")),
        };
    }
    if let Some(v) = get("user") {
        config.user = v.to_owned();
    }
    if let Some(v) = get("password") {
        config.password = v.to_owned();
    }
    Ok(config)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("-h") | Some("--help") | Some("help") => {
            print!("{USAGE}");
            return;
        }
        Some("run") => {}
        Some(other) => usage_error(&format!("unknown command '{other}'")),
    }
    let config = match raw_args(&args[1..]).and_then(|raw| config_from(&raw)) {
        Ok(c) => c,
        Err(e) => usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certus-jepsen: starting the runtime: {e}");
            std::process::exit(3);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(report) => {
            for w in &report.summary.workloads {
                println!(
                    "{:<12} ops {:>6}  ok {:>6}  fail {:>6}  info {:>5}  {}",
                    w.workload,
                    w.ops,
                    w.ok,
                    w.fail,
                    w.info,
                    if w.valid { "valid" } else { "INVALID" }
                );
            }
            println!(
                "{}: results in {}",
                if report.summary.valid {
                    "valid"
                } else {
                    "INVALID"
                },
                report.out_dir.display()
            );
            std::process::exit(if report.summary.valid { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("certus-jepsen: {e}");
            std::process::exit(3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        raw_args(&args).and_then(|raw| config_from(&raw))
    }

    #[test]
    fn endpoints_mode_needs_no_binary_and_takes_every_option() {
        let c = parse(&[
            "--endpoints",
            "a:3306,b:3306",
            "--seed",
            "9",
            "--time-limit",
            "30",
            "--workloads",
            "bank,set",
            "--nemesis",
            "none",
            "--clients-per-node",
            "2",
        ])
        .unwrap();
        assert!(matches!(c.target, Target::Endpoints(ref l) if l.len() == 2));
        assert_eq!(c.seed, 9);
        assert_eq!(c.time_limit, Duration::from_secs(30));
        assert_eq!(c.workloads, vec![WorkloadKind::Bank, WorkloadKind::Set]);
        assert!(c.nemeses.is_empty());
        assert_eq!(c.clients_per_node, 2);
        assert!(!c.serializable);
        let c = parse(&[
            "--endpoints",
            "a:1,b:2",
            "--galera-dir",
            "/tmp/g",
            "--nemesis",
            "kill,pause",
        ])
        .unwrap();
        assert!(matches!(c.target, Target::Galera { ref endpoints, .. } if endpoints.len() == 2));
        assert_eq!(c.nemeses, vec![NemesisKind::Kill, NemesisKind::Pause]);
        assert!(parse(&["--galera-dir", "/tmp/g"])
            .unwrap_err()
            .contains("needs --endpoints"));
        let c = parse(&["--endpoints", "a:1", "--consistency", "serializable"]).unwrap();
        assert!(c.serializable);
        assert!(parse(&["--endpoints", "a:1", "--consistency", "linearizable"]).is_err());
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        assert!(parse(&["--endpoints", "a:1", "--workloads", "register"])
            .unwrap_err()
            .contains("register"));
        assert!(parse(&["--endpoints", "a:1", "--bogus", "1"])
            .unwrap_err()
            .contains("bogus"));
        assert!(parse(&["--endpoints"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&["--endpoints", "a:1", "--time-limit", "-3"]).is_err());
        assert!(parse(&["--certus-bin", "/nonexistent/certus"])
            .unwrap_err()
            .contains("not found"));
    }
}
