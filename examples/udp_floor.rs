//! The machine's raw UDP floor: what one datagram costs the kernel before any
//! QUIC, TLS, HTTP/3 or wtgate work, so a benchmark can say how many packets'
//! worth of CPU a delivery costs.
//!
//! One thread, two blocking std sockets on loopback: send one datagram from A
//! to B, receive it on B, repeat until `--packets` are done or `--seconds` have
//! passed (after 2,000 unmeasured warmup packets). Prints one JSON line:
//! `us_per_packet` is the process's CPU time (utime + stime from
//! `/proc/self/stat`, the same source as the server figures of `wtgate load`)
//! per send + receive (counted in 10 ms ticks: the default 500,000 packets take
//! 1.5–2 s here, so that stays under 1 %), `wall_us_per_packet` the elapsed time
//! per packet (it also counts time other processes had the core).
//! `bench/run.sh` runs it once per run, pinned to cpu0 like the servers.
//!
//! ```sh
//! cargo run --release --example udp_floor -- --packets 500000 --seconds 5 --bytes 100
//! ```

use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// `USER_HZ`, the unit of `utime`/`stime` in `/proc/PID/stat` (100 on Linux).
const USER_HZ: u64 = 100;
const WARMUP: u64 = 2_000;

/// utime + stime of this process so far; `None` without Linux's `/proc`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields counted after the command name's closing `)`: utime is 14, stime 15.
    let mut fields = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// `--name VALUE` from the command line, or `default`.
fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        None => default,
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("udp_floor: {name} needs a number");
                std::process::exit(2);
            }
        },
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let packets: u64 = arg(&args, "--packets", 500_000).max(1);
    let seconds: f64 = arg(&args, "--seconds", 5.0);
    let bytes: usize = arg(&args, "--bytes", 100);

    let a = UdpSocket::bind("127.0.0.1:0")?;
    let b = UdpSocket::bind("127.0.0.1:0")?;
    a.connect(b.local_addr()?)?;
    // A datagram lost on loopback (it should not happen) ends the run instead of hanging it.
    b.set_read_timeout(Some(Duration::from_secs(1)))?;
    let out = vec![0x5a_u8; bytes];
    let mut buf = vec![0_u8; bytes.max(1) + 1];
    let mut one = || -> std::io::Result<()> {
        a.send(&out)?;
        let n = b.recv(&mut buf)?;
        if n != bytes {
            return Err(std::io::Error::other(format!(
                "received {n} of {bytes} bytes"
            )));
        }
        Ok(())
    };
    for _ in 0..WARMUP {
        one()?;
    }

    let limit = Duration::from_secs_f64(seconds);
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut sent = 0_u64;
    while sent < packets {
        one()?;
        sent += 1;
        // Reading the clock every 1,024 packets keeps it out of the figure.
        if sent.is_multiple_of(1024) && start.elapsed() >= limit {
            break;
        }
    }
    let wall = start.elapsed();
    let cpu = cpu_time().zip(cpu0).map(|(end, begin)| end - begin);

    let per = |d: Duration| d.as_secs_f64() * 1e6 / sent as f64;
    let cpu_us = cpu.map_or("null".to_owned(), |c| format!("{:.3}", per(c)));
    println!(
        "{{\"kind\":\"udp_floor\",\"packets\":{sent},\"bytes\":{bytes},\"wall_s\":{:.3},\
         \"us_per_packet\":{cpu_us},\"wall_us_per_packet\":{:.3}}}",
        wall.as_secs_f64(),
        per(wall)
    );
    Ok(())
}
