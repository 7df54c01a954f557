//! CPU time and resident memory of processes and threads, from `/proc` text.

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times. `USER_HZ` is 100 on every Linux
/// architecture loadwise runs on (it is part of the kernel's user-space ABI).
const TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time from the text of a `/proc/PID/stat` or
/// `/proc/PID/task/TID/stat` file.
pub fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may itself contain spaces
    // or parentheses; the fields after its last ')' start with field 3, the state.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(ticks(utime + stime))
}

fn ticks(n: u64) -> Duration {
    Duration::from_secs(n / TICKS_PER_SEC) + Duration::from_millis((n % TICKS_PER_SEC) * 1000 / TICKS_PER_SEC)
}

/// Resident memory in KiB from the text of a `/proc/PID/status` file.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `/proc/self` or `/proc/PID`.
fn proc_dir(pid: Option<u32>) -> String {
    pid.map_or_else(|| "/proc/self".to_owned(), |pid| format!("/proc/{pid}"))
}

/// CPU time used so far by process `pid` (`None`: this process).
pub fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    parse_stat_cpu(&std::fs::read_to_string(format!("{}/stat", proc_dir(pid))).ok()?)
}

/// Resident memory of process `pid` (`None`: this process), in KiB.
pub fn process_rss_kib(pid: Option<u32>) -> Option<u64> {
    parse_status_rss_kib(&std::fs::read_to_string(format!("{}/status", proc_dir(pid))).ok()?)
}

/// CPU time used so far by this process's threads whose name starts with `prefix`
/// (tokio names runtime threads; the kernel keeps the first 15 bytes).
pub fn threads_cpu(prefix: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").ok()?.filter_map(Result::ok) {
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else { continue };
        if !name.starts_with(prefix) {
            continue;
        }
        if let Some(cpu) = std::fs::read_to_string(path.join("stat")).ok().and_then(|s| parse_stat_cpu(&s)) {
            total += cpu;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(Duration::from_millis(3250)));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tloadwise\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status), Some(5120));
        assert_eq!(parse_status_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn this_process_is_measurable() {
        assert!(process_cpu(None).is_some());
        assert!(process_rss_kib(None).unwrap() > 0);
        assert!(threads_cpu("no-such-thread").is_some_and(|d| d.is_zero()));
    }
}
