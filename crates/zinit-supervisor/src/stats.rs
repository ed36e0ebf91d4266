//! CPU and memory per unit, summed over the unit's whole process tree
//! (through `sysinfo`).

use std::sync::Mutex;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use zinit_process::Members;

/// Resource use of one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitStats {
    /// The unit.
    pub name: String,
    /// How many processes it has.
    pub processes: usize,
    /// CPU use since the previous sample, in percent of one core (summed).
    pub cpu_percent: f32,
    /// Resident memory, summed, in bytes.
    pub memory_bytes: u64,
}

/// Keeps a `sysinfo` system between samples (CPU use needs two).
#[derive(Debug, Default)]
pub struct StatsSampler {
    system: Mutex<Option<System>>,
}

impl StatsSampler {
    /// Samples the units' processes (blocking: reads /proc).
    pub fn sample(&self, units: Vec<(String, Members)>) -> Vec<UnitStats> {
        let mut guard = self.system.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = System::new().ok();
        }
        let Some(system) = guard.as_mut() else {
            return Vec::new();
        };
        let per_unit: Vec<(String, Vec<i32>)> = units
            .into_iter()
            .map(|(name, members)| {
                let pids = members
                    .scan_now()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| m.id.pid)
                    .collect();
                (name, pids)
            })
            .collect();
        let all: Vec<Pid> = per_unit
            .iter()
            .flat_map(|(_, pids)| pids.iter().map(|p| Pid::from_u32(*p as u32)))
            .collect();
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        system.refresh_processes_specifics(ProcessesToUpdate::Some(&all), true, kind);
        per_unit
            .into_iter()
            .map(|(name, pids)| {
                let mut stats = UnitStats {
                    name,
                    processes: pids.len(),
                    cpu_percent: 0.0,
                    memory_bytes: 0,
                };
                for pid in pids {
                    if let Some(p) = system.process(Pid::from_u32(pid as u32)) {
                        stats.cpu_percent += p.cpu_usage();
                        stats.memory_bytes += p.memory();
                    }
                }
                stats
            })
            .collect()
    }
}
