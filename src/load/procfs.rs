//! A server process's CPU time and memory from `/proc`, for `--server-pid`, and
//! the generator's own CPU time.
//!
//! Parsing is separate from reading so it is tested on fixed text.

use std::time::Duration;

/// `USER_HZ`: the unit of `utime`/`stime` in `/proc/PID/stat`, fixed at 100 by
/// the Linux ABI on every architecture this runs on.
const USER_HZ: u64 = 100;

/// One look at a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time so far.
    pub cpu: Duration,
    /// Resident set size now, in KiB.
    pub rss_kb: u64,
    /// Peak resident set size (`VmHWM`), in KiB.
    pub peak_kb: u64,
}

impl ProcSample {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`.
    pub fn read(pid: u32) -> std::io::Result<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        Ok(ProcSample {
            cpu: parse_cpu(&stat).ok_or_else(|| bad("unreadable /proc/PID/stat"))?,
            rss_kb: status_kb(&status, "VmRSS:").ok_or_else(|| bad("no VmRSS"))?,
            peak_kb: status_kb(&status, "VmHWM:").unwrap_or(0),
        })
    }

    /// This process's own CPU time so far (the generator's).
    pub fn own_cpu() -> Option<Duration> {
        parse_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Adds the samples of several processes (one per `--url`).
    pub fn sum(samples: &[ProcSample]) -> ProcSample {
        samples
            .iter()
            .fold(ProcSample::default(), |a, s| ProcSample {
                cpu: a.cpu + s.cpu,
                rss_kb: a.rss_kb + s.rss_kb,
                peak_kb: a.peak_kb + s.peak_kb,
            })
    }
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// CPU time `cpu` as a share of one core over `wall`, in percent (rounded to 0.1).
pub fn cpu_percent(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    (cpu.as_secs_f64() / wall.as_secs_f64() * 1000.0).round() / 10.0
}

/// A `Key:   123 kB` line of `/proc/PID/status`, in KiB.
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu(stat), Some(Duration::from_millis(3250)));
        assert_eq!(parse_cpu("garbage"), None);
        assert_eq!(parse_cpu("1 (x) S 1 2"), None);
    }

    #[test]
    fn cpu_share_of_a_core() {
        let ms = Duration::from_millis;
        assert_eq!(cpu_percent(ms(4_500), ms(5_000)), 90.0);
        assert_eq!(cpu_percent(ms(1), ms(3)), 33.3);
        assert_eq!(cpu_percent(ms(7), Duration::ZERO), 0.0);
        assert!(
            ProcSample::own_cpu().is_some(),
            "this process reads its own stat"
        );
    }

    #[test]
    fn parses_status_sizes() {
        let status = "Name:\twtgate\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(102_400));
        assert_eq!(status_kb(status, "VmHWM:"), Some(204_800));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcSample::read(std::process::id()).unwrap();
        assert!(s.rss_kb > 0 && s.peak_kb >= s.rss_kb);
        let two = ProcSample::sum(&[s, s]);
        assert_eq!(two.rss_kb, 2 * s.rss_kb);
    }
}
