//! CPU and memory per unit, summed over the unit's whole process tree. CPU
//! use is measured over a short window within each call (two reads of
//! `/proc/PID/stat`, [`WINDOW`] apart), so the first answer is as good as
//! any other and quick repeats do not disturb each other.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use zinit_process::Members;

/// How long CPU use is measured for.
pub const WINDOW: Duration = Duration::from_millis(250);

/// Resource use of one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitStats {
    /// The unit.
    pub name: String,
    /// How many processes it has.
    pub processes: usize,
    /// CPU use over the window, in percent of one core (summed).
    pub cpu_percent: f32,
    /// Resident memory, summed, in bytes.
    pub memory_bytes: u64,
}

/// CPU time used so far (clock ticks) and resident memory (bytes) of one
/// process; `None` once it is gone.
fn usage(pid: i32, page_size: u64) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold anything: the fields start after its `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5): utime and stime (11 and 12 after `)`).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Field 24: the resident set, in pages.
    let rss: u64 = fields.get(21)?.parse().ok()?;
    Some((utime + stime, rss * page_size))
}

/// The processes of each unit and what each has used so far (blocking:
/// reads /proc).
fn read_all(units: &[(String, Members)], page_size: u64) -> Vec<HashMap<i32, (u64, u64)>> {
    units
        .iter()
        .map(|(_, members)| {
            members
                .scan_now()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| usage(m.id.pid, page_size).map(|u| (m.id.pid, u)))
                .collect()
        })
        .collect()
}

/// Samples the units' processes: their CPU use over [`WINDOW`] and their
/// memory at its end.
pub async fn sample(units: Vec<(String, Members)>) -> Vec<UnitStats> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .filter(|p| *p > 0)
        .unwrap_or(4096) as u64;
    let units = std::sync::Arc::new(units);
    let read = |units: std::sync::Arc<Vec<(String, Members)>>| async move {
        let at = Instant::now();
        let found = tokio::task::spawn_blocking(move || read_all(&units, page_size))
            .await
            .unwrap_or_default();
        (at, found)
    };
    let (start, before) = read(units.clone()).await;
    tokio::time::sleep(WINDOW).await;
    let (end, after) = read(units.clone()).await;
    let elapsed = end.duration_since(start).as_secs_f64().max(1e-3);
    units
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let now = after.get(i).cloned().unwrap_or_default();
            let then = before.get(i).cloned().unwrap_or_default();
            let used: u64 = now
                .iter()
                .map(|(pid, (cpu, _))| {
                    // A process that started within the window counts from zero.
                    let was = then.get(pid).map_or(0, |(cpu, _)| *cpu);
                    cpu.saturating_sub(was)
                })
                .sum();
            UnitStats {
                name: name.clone(),
                processes: now.len(),
                cpu_percent: (used as f64 / ticks / elapsed * 100.0) as f32,
                memory_bytes: now.values().map(|(_, rss)| rss).sum(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_has_resident_memory_and_a_missing_one_has_no_usage() {
        let (_, rss) = usage(std::process::id() as i32, 4096).expect("our own stat");
        assert!(rss > 0);
        assert_eq!(usage(-1, 4096), None);
    }
}
