//! How busy the machine was during a scenario, and how much of its CPU time the hypervisor gave to
//! other guests (steal). On a shared virtual machine the latency scenario's tail follows the steal
//! more than any change to the nodes (docs/benchmarks.md, thirty-second pass), so every report
//! carries both to read its figures by.

/// The machine's CPU time counters since boot, summed over its CPUs, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    total: u64,
    idle: u64,
    steal: u64,
}

/// Shares of the machine's CPU time between two readings, in per cent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostLoad {
    /// Time the CPUs spent running anything (this benchmark, the nodes, the rest of the machine).
    pub busy_pct: f64,
    /// Time the hypervisor ran other guests while this one had work.
    pub steal_pct: f64,
}

impl CpuTimes {
    /// The counters now; `None` where `/proc/stat` cannot be read (not Linux).
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Reads the aggregate `cpu` line of `/proc/stat`: user, nice, system, idle, iowait, irq,
    /// softirq, steal, then guest times that user and nice already include.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [_user, _nice, _system, idle, iowait, _irq, _softirq, steal] = fields[..] else {
            return None;
        };
        Some(Self {
            total: fields.iter().sum(),
            idle: idle + iowait,
            steal,
        })
    }

    /// The load between `self` and the later reading `then`; `None` if no time passed.
    pub fn load_until(&self, then: &Self) -> Option<HostLoad> {
        let total = then.total.checked_sub(self.total).filter(|&t| t > 0)? as f64;
        let idle = then.idle.saturating_sub(self.idle) as f64;
        let steal = then.steal.saturating_sub(self.steal) as f64;
        Some(HostLoad {
            busy_pct: 100.0 * (total - idle - steal).max(0.0) / total,
            steal_pct: 100.0 * steal / total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(user: u64, idle: u64, steal: u64) -> String {
        format!(
            "cpu  {user} 0 100 {idle} 50 0 10 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 12345\n"
        )
    }

    #[test]
    fn shares_come_from_the_aggregate_line_between_two_readings() {
        let before = CpuTimes::parse(&stat(1_000, 5_000, 100)).expect("a cpu line");
        // 1,000 ticks later: 600 running, 300 idle, 100 stolen.
        let after = CpuTimes::parse(&stat(1_600, 5_300, 200)).expect("a cpu line");
        let load = before.load_until(&after).expect("time passed");
        assert!((load.busy_pct - 60.0).abs() < 1e-9, "{load:?}");
        assert!((load.steal_pct - 10.0).abs() < 1e-9, "{load:?}");
    }

    #[test]
    fn unreadable_or_unchanged_counters_give_nothing() {
        assert_eq!(CpuTimes::parse("intr 1 2 3\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3\n"), None, "too few fields");
        let same = CpuTimes::parse(&stat(1, 2, 3)).expect("a cpu line");
        assert_eq!(same.load_until(&same), None);
    }
}
