//! The fuzz targets as a plain, bounded random-input run: no instrumentation, no
//! libFuzzer, so it builds with the rest of the test suite. Each target gets its seeds
//! (`seeds/NAME`, plus `corpus/NAME` and `regressions/NAME` when present), then random
//! mutations of them (bit flips, byte changes, inserted dictionary tokens from
//! `dict/NAME.dict`, cut, duplicated and spliced ranges) until its time is up.
//!
//! Usage: `cargo test --release --no-default-features --test random -- [SECONDS] [NAME...]`
//! (SECONDS per target, default 10). `PORCH_FUZZ_SEED` picks the random sequence
//! (default: fixed, so a run is repeatable). A failing input is written to
//! `artifacts/NAME/crash-HASH` and the run exits non-zero.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use porch_fuzz::TARGETS;

/// Longest input the mutator makes.
const MAX_LEN: usize = 4096;

/// xorshift64*: small, fast, repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_dir_files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// The quoted entries of a libFuzzer dictionary (`"..."` or `name="..."`, `\xHH` escapes).
fn dictionary(path: &Path) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let (Some(start), Some(end)) = (line.find('"'), line.rfind('"')) else {
            continue;
        };
        if end <= start {
            continue;
        }
        let raw = line[start + 1..end].as_bytes();
        let mut token = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            match raw[i] {
                b'\\' if raw.get(i + 1) == Some(&b'x') && i + 3 < raw.len() => {
                    let hex = std::str::from_utf8(&raw[i + 2..i + 4]).unwrap_or("");
                    token.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 4;
                }
                b'\\' if i + 1 < raw.len() => {
                    token.push(raw[i + 1]);
                    i += 2;
                }
                b => {
                    token.push(b);
                    i += 1;
                }
            }
        }
        out.push(token);
    }
    out
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(6) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                // An "interesting" byte: boundaries of the checks under test.
                let i = rng.below(len);
                input[i] = *[0u8, 0x7f, 0xff, b'\r', b'\n', b' ', b'%', b'/', b'.', b'"']
                    .get(rng.below(10))
                    .unwrap();
            }
            3 if !dict.is_empty() => {
                let token = &dict[rng.below(dict.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            4 if !dict.is_empty() && len > 0 => {
                let token = &dict[rng.below(dict.len())];
                let at = rng.below(len);
                let end = (at + token.len()).min(len);
                input.splice(at..end, token.iter().copied());
            }
            5 if len > 0 => {
                let a = rng.below(len);
                let b = a + rng.below(len - a + 1).min(64);
                input.drain(a..b);
            }
            6 if len > 0 => {
                let a = rng.below(len);
                let b = a + rng.below(len - a + 1).min(64);
                let piece = input[a..b].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            7 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a + 1);
                    let at = rng.below(len + 1);
                    input.truncate(at);
                    input.extend_from_slice(&other[a..b]);
                }
            }
            _ => {
                let n = 1 + rng.below(8);
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
        }
    }
    input.truncate(MAX_LEN);
}

fn hash(data: &[u8]) -> u64 {
    // FNV-1a: a stable name for a crash file.
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn report(name: &str, input: &[u8], message: &str) -> PathBuf {
    let dir = fuzz_dir().join("artifacts").join(name);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("crash-{:016x}", hash(input)));
    let _ = std::fs::write(&path, input);
    eprintln!("FAILED {name}: {message}");
    eprintln!("  input ({} bytes): {:?}", input.len(), String::from_utf8_lossy(input));
    eprintln!("  saved to {}", path.display());
    eprintln!(
        "  replay: fuzz/run.sh --replay {name} {}",
        path.display()
    );
    path
}

/// `--replay NAME FILE...`: runs the target on each file, panicking (with the property's
/// message) on the first that fails.
fn replay(args: &[String]) {
    let Some((name, files)) = args.split_first() else {
        panic!("usage: --replay NAME FILE...");
    };
    let Some(&(_, run)) = TARGETS.iter().find(|(n, _)| n == name) else {
        panic!("no target named {name}");
    };
    for f in files {
        let input = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        println!("{name}: {f} ({} bytes)", input.len());
        run(&input);
    }
    println!("{name}: {} passed, 0 failed", files.len());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--replay") {
        replay(&args[1..]);
        return;
    }
    let mut secs = 10u64;
    let mut only: Vec<String> = Vec::new();
    for arg in args {
        if let Ok(n) = arg.parse() {
            secs = n;
        } else if !arg.starts_with('-') {
            only.push(arg);
        }
    }
    let seed: u64 = std::env::var("PORCH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0f90_41c4);
    // Keep the panic message for the report instead of the default hook's output.
    let last_panic: Arc<Mutex<String>> = Arc::default();
    {
        let last_panic = last_panic.clone();
        panic::set_hook(Box::new(move |info| {
            *last_panic.lock().unwrap() = info.to_string();
        }));
    }

    let (mut passed, mut failed) = (0, 0);
    for &(name, run) in TARGETS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let dir = fuzz_dir();
        let mut pool = read_dir_files(&dir.join("seeds").join(name));
        pool.extend(read_dir_files(&dir.join("regressions").join(name)));
        pool.extend(read_dir_files(&dir.join("corpus").join(name)));
        if pool.is_empty() {
            pool.push(Vec::new());
        }
        let dict = dictionary(&dir.join("dict").join(format!("{name}.dict")));
        let mut rng = Rng(seed ^ hash(name.as_bytes()) | 1);
        let try_one = |input: &[u8]| -> Result<(), String> {
            panic::catch_unwind(AssertUnwindSafe(|| run(input)))
                .map_err(|_| last_panic.lock().unwrap().clone())
        };

        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        let mut execs = 0u64;
        let mut failure = None;
        for input in &pool {
            execs += 1;
            if let Err(m) = try_one(input) {
                failure = Some((input.clone(), m));
                break;
            }
        }
        while failure.is_none() && Instant::now() < deadline {
            for _ in 0..64 {
                let mut input = pool[rng.below(pool.len())].clone();
                mutate(&mut rng, &mut input, &pool, &dict);
                execs += 1;
                if let Err(m) = try_one(&input) {
                    failure = Some((input, m));
                    break;
                }
                // Grow the pool a little so mutations compound (no coverage feedback).
                if pool.len() < 4096 && rng.below(16) == 0 {
                    pool.push(input);
                }
            }
        }
        let took = started.elapsed().as_secs_f64();
        match failure {
            None => {
                passed += 1;
                println!("{name}: ok, {execs} inputs in {took:.1}s");
            }
            Some((input, message)) => {
                failed += 1;
                report(name, &input, &message);
                println!("{name}: FAILED after {execs} inputs in {took:.1}s");
            }
        }
    }
    println!("random inputs with PORCH_FUZZ_SEED={seed}, {secs}s per target");
    println!("fuzz: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
