//! The process's own figures, under the names every Prometheus client
//! library gives them (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`…), read from
//! `/proc/self` at each scrape. Other systems: none (the family is absent).

use prometheus_client::registry::Registry;

/// Adds the process collector to `registry` (unprefixed).
pub fn register(registry: &mut Registry) {
    #[cfg(target_os = "linux")]
    registry.register_collector(Box::new(linux::ProcessCollector));
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
}

#[cfg(target_os = "linux")]
mod linux {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Unit;

    #[derive(Debug)]
    pub struct ProcessCollector;

    /// What `/proc/self/stat` says (fields after the command's parentheses).
    #[derive(Debug, Default, PartialEq)]
    pub(super) struct Stat {
        pub cpu_seconds: f64,
        pub start_seconds_after_boot: f64,
        pub threads: i64,
        pub virtual_bytes: i64,
        pub resident_bytes: i64,
    }

    /// Parses `/proc/<pid>/stat` (proc(5)); `None` when it does not read as one.
    pub(super) fn parse_stat(text: &str, ticks: f64, page: i64) -> Option<Stat> {
        // The command may hold spaces and parentheses: the fields start
        // after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is the state (field 3 of proc(5)).
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)? as i64,
            start_seconds_after_boot: field(22)? as f64 / ticks,
            virtual_bytes: field(23)? as i64,
            resident_bytes: field(24)? as i64 * page,
        })
    }

    /// The soft limit on open files from `/proc/self/limits`.
    pub(super) fn parse_max_fds(limits: &str) -> Option<i64> {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Seconds since the epoch at boot, from `/proc/stat`'s `btime`.
    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("btime "))?;
        line[6..].trim().parse().ok()
    }

    fn open_fds() -> Option<i64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
    }

    /// The page size as i64 (`c_long` is 32 bits on some targets).
    #[allow(clippy::useless_conversion)]
    fn page_size(page: libc::c_long) -> i64 {
        i64::from(page.max(1))
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            // SAFETY: sysconf only reads a system constant.
            let (ticks, page) = unsafe {
                (
                    libc::sysconf(libc::_SC_CLK_TCK),
                    libc::sysconf(libc::_SC_PAGESIZE),
                )
            };
            let stat = std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|t| parse_stat(&t, ticks.max(1) as f64, page_size(page)));
            if let Some(stat) = &stat {
                let cpu = ConstCounter::new(stat.cpu_seconds);
                cpu.encode(encoder.encode_descriptor(
                    "process_cpu",
                    "User and system CPU time spent",
                    Some(&Unit::Seconds),
                    cpu.metric_type(),
                )?)?;
            }
            let start = stat
                .as_ref()
                .zip(boot_time())
                .map(|(stat, boot)| boot + stat.start_seconds_after_boot);
            let limits = std::fs::read_to_string("/proc/self/limits").ok();
            let bytes = Some(&Unit::Bytes);
            let gauges: [(&str, &str, Option<&Unit>, Option<f64>); 6] = [
                (
                    "process_resident_memory",
                    "Resident memory size",
                    bytes,
                    stat.as_ref().map(|s| s.resident_bytes as f64),
                ),
                (
                    "process_virtual_memory",
                    "Virtual memory size",
                    bytes,
                    stat.as_ref().map(|s| s.virtual_bytes as f64),
                ),
                (
                    "process_threads",
                    "Threads of the process",
                    None,
                    stat.as_ref().map(|s| s.threads as f64),
                ),
                (
                    "process_start_time",
                    "Start time of the process since the Unix epoch",
                    Some(&Unit::Seconds),
                    start,
                ),
                (
                    "process_open_fds",
                    "Open file descriptors",
                    None,
                    open_fds().map(|n| n as f64),
                ),
                (
                    "process_max_fds",
                    "Limit on open file descriptors",
                    None,
                    limits.as_deref().and_then(parse_max_fds).map(|n| n as f64),
                ),
            ];
            // A figure that cannot be read is left out, not shown as 0.
            for (name, help, unit, value) in gauges {
                let Some(value) = value else { continue };
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    unit,
                    gauge.metric_type(),
                )?)?;
            }
            Ok(())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::{parse_max_fds, parse_stat, Stat};

    #[test]
    fn stat_fields_are_read_after_the_command() {
        // A command with a space and a parenthesis; utime 250, stime 50,
        // 7 threads, started 1000 ticks after boot, 4096 pages resident.
        let text = "1234 (sav (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1000 123456789 4096 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(text, 100.0, 4096),
            Some(Stat {
                cpu_seconds: 3.0,
                start_seconds_after_boot: 10.0,
                threads: 7,
                virtual_bytes: 123_456_789,
                resident_bytes: 4096 * 4096,
            })
        );
        assert_eq!(parse_stat("garbage", 100.0, 4096), None);
        assert_eq!(parse_stat("1 (x) S 1 2", 100.0, 4096), None);
    }

    #[test]
    fn the_soft_limit_on_open_files() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(parse_max_fds("nothing"), None);
    }
}
