//! `kura-netem UPSTREAM [--latency-ms N] [--rate-mb N] [--stats FILE]`:
//! a wide-area link on loopback (see `kura_testkit::netem`). Prints the
//! address it listens on, then writes its counts as JSON to FILE whenever
//! they change, so a benchmark can read them between steps.
use kura_testkit::netem::{Netem, Shape};
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut upstream = None;
    let (mut latency_ms, mut rate_mb, mut stats, mut listen) = (20u64, 0u64, None, "127.0.0.1:0".to_owned());
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--latency-ms" => {
                latency_ms = value().parse().unwrap_or_else(|_| usage("--latency-ms takes a number"))
            }
            "--rate-mb" => rate_mb = value().parse().unwrap_or_else(|_| usage("--rate-mb takes a number")),
            "--stats" => stats = Some(value()),
            "--listen" => listen = value(),
            _ if upstream.is_none() => {
                upstream = Some(
                    arg.parse().unwrap_or_else(|_| usage("UPSTREAM is an address such as 127.0.0.1:9000")),
                )
            }
            _ => usage(&format!("unexpected argument {arg}")),
        }
    }
    let upstream = upstream.unwrap_or_else(|| usage("give the upstream address"));
    let shape = Shape {
        latency: Duration::from_millis(latency_ms),
        rate: (rate_mb > 0).then_some(rate_mb * 1_000_000),
    };
    let link = Netem::start(&listen, upstream, shape).unwrap_or_else(|e| {
        eprintln!("kura-netem: cannot listen on {listen}: {e}");
        std::process::exit(1)
    });
    println!("{}", link.addr);
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = link.counts().to_json();
        if now != last {
            if let Some(path) = &stats {
                let tmp = format!("{path}.tmp");
                if std::fs::write(&tmp, format!("{now}\n"))
                    .and_then(|()| std::fs::rename(&tmp, path))
                    .is_err()
                {
                    eprintln!("kura-netem: cannot write {path}");
                }
            }
            last = now;
        }
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("kura-netem: {problem}\nusage: kura-netem UPSTREAM [--listen ADDR] [--latency-ms N] [--rate-mb MB_PER_S] [--stats FILE]");
    std::process::exit(2)
}
