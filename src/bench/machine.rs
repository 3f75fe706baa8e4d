//! What the numbers were measured on, read from /proc where it exists: a benchmark figure is
//! meaningless without the CPU, the core count and how busy the machine was.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: Option<String>,
    pub logical_cpus: usize,
    pub mem_total_gib: Option<f64>,
    pub os: String,
    pub arch: String,
    /// 1-, 5- and 15-minute load averages at the start and at the end of the run.
    pub load_before: Option<[f64; 3]>,
    pub load_after: Option<[f64; 3]>,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu: field(&cpuinfo, "model name").map(str::to_string),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total_gib: field(&meminfo, "MemTotal")
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map(|kib| kib / (1024.0 * 1024.0)),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            load_before: load_average(),
            load_after: None,
        }
    }

    /// Record the load at the end, to tell a busy machine from an idle one.
    pub fn finish(&mut self) {
        self.load_after = load_average();
    }
}

/// The value of the first `key: value` line of a /proc file.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(s: &str) -> Option<[f64; 3]> {
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(
            parse_loadavg("4.01 5.28 5.24 3/412 12345\n"),
            Some([4.01, 5.28, 5.24])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 9xx4\nflags\t: fpu\n";
        assert_eq!(field(cpuinfo, "model name"), Some("AMD EPYC 9xx4"));
        assert_eq!(field(cpuinfo, "missing"), None);
    }
}
