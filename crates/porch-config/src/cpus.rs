//! How many CPUs porch may use: the cores it may run on, lowered by a cgroup CPU quota.
//!
//! A container limited to 2 CPUs on a 64-core node sees 64 cores (`nproc`), and one
//! worker per core would be 64 Python processes throttled into 2 CPUs' worth of time,
//! each costing its memory. Kubernetes (`resources.limits.cpu`), Docker (`--cpus`) and
//! systemd (`CPUQuota=`) all express the limit as a CFS quota: cgroup v2 `cpu.max`
//! ("QUOTA PERIOD" or "max PERIOD"), cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`
//! (-1 for none). The limit is the lowest quota on the way from the process's own cgroup
//! up to the hierarchy's root, rounded up to whole CPUs.
//!
//! Read by hand rather than through a crate: it is two small files found through
//! `/proc/self/cgroup` and `/proc/self/mountinfo`, and the crates that do it pull in far
//! more (full cgroup management) than this needs.

use std::path::{Path, PathBuf};

/// The CPUs porch may use: `available_parallelism` (which honours the affinity mask),
/// lowered by a CPU quota if one applies. At least 1.
pub fn available_cpus() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match quota_cpus(Path::new("/proc/self")) {
        Some(q) => cores.min(q).max(1),
        None => cores,
    }
}

/// The CPU quota of the process whose `/proc/PID` is `proc`, in whole CPUs (rounded up).
fn quota_cpus(proc: &Path) -> Option<usize> {
    let cgroups = std::fs::read_to_string(proc.join("cgroup")).ok()?;
    let mountinfo = std::fs::read_to_string(proc.join("mountinfo")).ok()?;
    let mut best: Option<f64> = None;
    for (dir, mountpoint) in quota_dirs(&cgroups, &mountinfo) {
        for d in dir.ancestors().take_while(|d| d.starts_with(&mountpoint)) {
            if let Some(cpus) = read_quota(d) {
                best = Some(best.map_or(cpus, |b: f64| b.min(cpus)));
            }
        }
    }
    best.map(|cpus| (cpus.ceil() as usize).max(1))
}

/// The cgroup directories (v2, and v1's `cpu` controller) the process is in, each with
/// the mount point that holds it (cgroups above a mount's root, as in a container's
/// cgroup namespace, are not visible and need not be).
fn quota_dirs(cgroups: &str, mountinfo: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let v2 = controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "cpu") {
            continue;
        }
        for m in mountinfo.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPEROPTIONS
            let Some((left, right)) = m.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            if fields.len() < 5 || rfields.len() < 3 {
                continue;
            }
            let (root, mountpoint, fstype) = (fields[3], fields[4], rfields[0]);
            let fits = if v2 {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && rfields[2].split(',').any(|o| o == "cpu")
            };
            if !fits {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(path)
                .trim_start_matches('/');
            out.push((Path::new(mountpoint).join(rel), PathBuf::from(mountpoint)));
        }
    }
    out
}

/// The quota set on one cgroup directory, in CPUs; `None` for no limit or no file.
fn read_quota(dir: &Path) -> Option<f64> {
    if let Ok(max) = std::fs::read_to_string(dir.join("cpu.max")) {
        let mut it = max.split_whitespace();
        let quota = it.next()?.parse::<f64>().ok()?; // "max" fails to parse: no limit
        let period = it.next()?.parse::<f64>().ok()?;
        return (quota > 0.0 && period > 0.0).then(|| quota / period);
    }
    let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
    let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
    let (quota, period) = (
        quota.trim().parse::<f64>().ok()?,
        period.trim().parse::<f64>().ok()?,
    );
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc/self` and cgroup tree in a temporary directory.
    fn fake(cgroup: &str, mount: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::write(proc.join("cgroup"), cgroup).unwrap();
        let mount = mount.replace("ROOT", dir.path().to_str().unwrap());
        std::fs::write(proc.join("mountinfo"), mount).unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        (dir, proc)
    }

    #[test]
    fn cgroup_v2_quota_in_a_container_namespace() {
        let (_d, proc) = fake(
            "0::/\n",
            "30 25 0:26 / ROOT/cg rw,nosuid - cgroup2 cgroup2 rw\n",
            &[("cg/cpu.max", "150000 100000\n")],
        );
        assert_eq!(quota_cpus(&proc), Some(2), "1.5 CPUs round up to 2");
    }

    #[test]
    fn cgroup_v2_without_a_limit_and_a_limited_parent() {
        let (_d, proc) = fake(
            "0::/kubepods/pod1/c1\n",
            "30 25 0:26 / ROOT/cg rw - cgroup2 cgroup2 rw\n",
            &[
                ("cg/kubepods/pod1/c1/cpu.max", "max 100000\n"),
                ("cg/kubepods/pod1/cpu.max", "300000 100000\n"),
            ],
        );
        assert_eq!(quota_cpus(&proc), Some(3));
    }

    #[test]
    fn cgroup_v1_cpu_controller_mounted_with_cpuacct() {
        let (_d, proc) = fake(
            "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n",
            "40 25 0:30 / ROOT/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
            &[
                ("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "100000\n"),
                ("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n"),
            ],
        );
        assert_eq!(quota_cpus(&proc), Some(1));
    }

    #[test]
    fn no_quota_anywhere_is_none() {
        let (_d, proc) = fake(
            "1:cpu:/\n",
            "40 25 0:30 / ROOT/cpu rw - cgroup cgroup rw,cpu\n",
            &[
                ("cpu/cpu.cfs_quota_us", "-1\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
            ],
        );
        assert_eq!(quota_cpus(&proc), None);
    }
}
