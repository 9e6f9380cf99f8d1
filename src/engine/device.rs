//! Where the engine runs: `--device auto|cpu|cuda[:N]|metal[:N]`, the name the server reports it by
//! (`/health`, `ps`, `/metrics`), and how much memory a KV cache may take there.

use std::fmt;
use std::str::FromStr;

use candle_core::{Device, DeviceLocation};

/// The device a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first GPU this build supports and the machine has, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected auto, cpu, cuda, cuda:N, metal or metal:N")]
    Unknown(String),
    #[error("this build has no CUDA support: build it with `--features cuda`")]
    NoCuda,
    #[error("this build has no Metal support: build it on macOS with `--features metal`")]
    NoMetal,
    #[error("cannot open {device}: {reason}")]
    Open {
        device: DeviceChoice,
        reason: String,
    },
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, ordinal) = match lower.split_once(':') {
            Some((kind, n)) => {
                let n = n.parse().map_err(|_| DeviceError::Unknown(s.to_string()))?;
                (kind, Some(n))
            }
            None => (lower.as_str(), None),
        };
        match (kind, ordinal) {
            ("auto", None) => Ok(DeviceChoice::Auto),
            ("cpu", None) => Ok(DeviceChoice::Cpu),
            ("cuda" | "gpu", n) => Ok(DeviceChoice::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(DeviceChoice::Metal(n.unwrap_or(0))),
            _ => Err(DeviceError::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `Auto` falls back to the CPU quietly; a named GPU that cannot open is an error.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => open_cuda(n),
            DeviceChoice::Metal(n) => open_metal(n),
            DeviceChoice::Auto => {
                if cfg!(feature = "cuda") {
                    match open_cuda(0) {
                        Ok(device) => return Ok(device),
                        Err(e) => tracing::info!("no CUDA device, running on the CPU: {e}"),
                    }
                }
                if cfg!(feature = "metal") {
                    match open_metal(0) {
                        Ok(device) => return Ok(device),
                        Err(e) => tracing::info!("no Metal device, running on the CPU: {e}"),
                    }
                }
                Ok(Device::Cpu)
            }
        }
    }
}

fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    if !cfg!(feature = "cuda") {
        return Err(DeviceError::NoCuda);
    }
    Device::new_cuda(ordinal).map_err(|e| DeviceError::Open {
        device: DeviceChoice::Cuda(ordinal),
        reason: first_line(&e),
    })
}

fn open_metal(ordinal: usize) -> Result<Device, DeviceError> {
    if !cfg!(feature = "metal") {
        return Err(DeviceError::NoMetal);
    }
    Device::new_metal(ordinal).map_err(|e| DeviceError::Open {
        device: DeviceChoice::Metal(ordinal),
        reason: first_line(&e),
    })
}

/// candle appends a backtrace to some errors; one line is what a CLI error should be.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The name a device is reported by: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Bytes a new KV cache may take on `device`, asked after the weights are loaded. On a CUDA GPU, most of
/// what is free (the rest is for activations and candle's workspaces); on the CPU and on Metal's unified
/// memory, a quarter of the memory available to this process.
pub fn kv_cache_budget(device: &Device) -> Option<usize> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => models::cuda::memory_info(cuda)
            .ok()
            .map(|(free, _total)| free / 10 * 8),
        _ => available_memory_bytes().map(|m| m / 4),
    }
}

/// Memory this process can still take: the system's available memory, capped by the cgroup's limit
/// (a container's `memory.max`) less what the cgroup already uses.
pub fn available_memory_bytes() -> Option<usize> {
    let system = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| meminfo_available(&meminfo));
    let cgroup = cgroup_available();
    match (system, cgroup) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn meminfo_available(meminfo: &str) -> Option<usize> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the cgroup (v2) this process runs in still allows.
fn cgroup_available() -> Option<usize> {
    let path = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let relative = path.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let dir = std::path::Path::new("/sys/fs/cgroup").join(relative.trim_start_matches('/'));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    cgroup_headroom(
        &read("memory.max")?,
        &read("memory.current")?,
        &read("memory.stat")?,
    )
}

/// `memory.max` less the working set (`memory.current` less `inactive_file`, the page cache the kernel
/// reclaims first), as the kubelet counts it. None when the cgroup has no limit.
fn cgroup_headroom(max: &str, current: &str, stat: &str) -> Option<usize> {
    let max: usize = max.trim().parse().ok()?;
    let current: usize = current.trim().parse().ok()?;
    let inactive_file: usize = stat
        .lines()
        .find_map(|l| l.strip_prefix("inactive_file "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Some(max.saturating_sub(current.saturating_sub(inactive_file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_as_users_write_them() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        assert_eq!(
            "metal:0".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Metal(0)
        );
        for bad in ["tpu", "cuda:x", "cpu:1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.to_string().contains("expected auto, cpu"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_gpu_this_build_lacks_is_a_clear_error_and_auto_falls_back_to_the_cpu() {
        if !cfg!(feature = "cuda") {
            let e = DeviceChoice::Cuda(0).open().unwrap_err();
            assert!(e.to_string().contains("--features cuda"), "{e}");
        }
        if !cfg!(feature = "metal") {
            let e = DeviceChoice::Metal(0).open().unwrap_err();
            assert!(e.to_string().contains("--features metal"), "{e}");
        }
        let auto = DeviceChoice::Auto.open().unwrap();
        assert!(matches!(
            device_name(&auto).as_str(),
            "cpu" | "cuda:0" | "metal:0"
        ));
        assert_eq!(device_name(&Device::Cpu), "cpu");
    }

    #[test]
    fn the_cgroup_headroom_is_the_limit_less_the_working_set() {
        let stat = "anon 1000\nfile 5000\ninactive_file 3000\nactive_file 2000\n";
        assert_eq!(cgroup_headroom("10000\n", "6000\n", stat), Some(7000));
        assert_eq!(cgroup_headroom("max\n", "6000\n", stat), None);
        assert_eq!(cgroup_headroom("4000", "9000", "inactive_file 0"), Some(0));
        let meminfo = "MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_available(meminfo), Some(2048 * 1024));
    }
}
