//! A bounded fuzz run of the service-file parser, part of the test suite:
//! valid files covering every field are mutated (bytes flipped, fragments
//! that YAML and number parsers find hard inserted, ranges cut and lines
//! repeated) for a few seconds with a fixed seed, and every result must be
//! a `ServiceConfig` or a list of errors — never a panic, never a hang.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};
use zinit_supervisor::config::parse_service;

/// Valid files, every field somewhere.
const CORPUS: &[&str] = &[
    "exec: /bin/web --port 80 'two words'\ntest: /bin/true\ntest_interval: 500ms\ntest_timeout: 10s\noneshot: false\nafter: [db, cache]\nsignal:\n  stop: SIGTERM\nshutdown_timeout: 20\nlog: stdout\nenv:\n  PORT: 80\n  NAME: web\ndir: /srv/web\n",
    "exec: /bin/job\noneshot: true\nstop_signal: INT\nstop_timeout_ms: 2500\nstop: /bin/job --drain\nstop_mode: group\nports: [8080, \"53/udp\", \"8443/tcp\"]\nprocess_filters: [\"name:worker\", \"exe:/bin/w\", \"cmdline:w --id \\\\d+\"]\n",
    "exec: /bin/a\nrestart:\n  policy: on-failure\n  delay: 100ms\n  factor: 2\n  max_delay: 30s\n  reset_after: 60s\n  max_restarts: 5\nlog:\n  mode: ring\n  file: /var/log/a.log\n  max_size: 10485760\n  keep: 3\nuser: nobody\ngroup: nogroup\nlimits:\n  nofile: 4096\n  core: unlimited\n  nproc: \"512:1024\"\n",
    "exec: /bin/b\nlog: null\ndir: \"\"\nrestart: never\n",
];

/// Fragments that stress YAML, numbers and durations.
const FRAGMENTS: &[&str] = &[
    "1e308",
    "-1",
    "1e20",
    "-0",
    ".inf",
    "-.inf",
    ".nan",
    "0x7fffffffffffffff",
    "18446744073709551616",
    "99999999999999999999999999",
    "500000000000y",
    "1ns",
    "~",
    "null",
    "true",
    "[",
    "]",
    "{",
    "}",
    ": ",
    ":",
    "\n  ",
    "\n- ",
    "'",
    "\"",
    "\\",
    "&a ",
    "*a",
    "!!binary ",
    "!!str ",
    "<<: *a\n",
    "\u{0}",
    "\t",
    "#",
    "---\n",
    "...\n",
    "?",
    "|\n  ",
    ">\n  ",
    "%YAML 1.2\n",
    "\u{feff}",
    "é",
    "\u{202e}",
    "%",
    "@",
    "`",
];

/// A small, fast, seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 | 2 => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes();
                bytes.splice(at..at, fragment.iter().copied());
            }
            3 if !bytes.is_empty() => {
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            _ => {
                let line: Vec<u8> = bytes
                    .split(|&b| b == b'\n')
                    .nth(rng.below(8))
                    .unwrap_or_default()
                    .to_vec();
                bytes.splice(at..at, line.into_iter().chain(std::iter::once(b'\n')));
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn the_parser_never_panics_or_hangs_on_mutated_files() {
    let budget = Duration::from_secs(8);
    let started = Instant::now();
    let mut rng = Rng(0x5eed_2026_1129_0001);
    let mut runs = 0u64;
    let mut accepted = 0u64;
    while started.elapsed() < budget && runs < 200_000 {
        let base = CORPUS[rng.below(CORPUS.len())];
        let text = mutate(&mut rng, base);
        let one = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            parse_service(Path::new("/etc/zinit/fuzz.yaml"), "fuzz", &text)
        }));
        let took = one.elapsed();
        match result {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(errors)) => assert!(!errors.is_empty(), "an empty error list for {text:?}"),
            Err(_) => panic!("the parser panicked on:\n{text:?}"),
        }
        assert!(
            took < Duration::from_secs(1),
            "one file took {took:?}:\n{text:?}"
        );
        runs += 1;
    }
    assert!(runs > 1000, "only {runs} runs in {budget:?}");
    eprintln!("fuzz: {runs} mutated files, {accepted} accepted, none panicked");
}

#[test]
fn an_alias_bomb_is_refused_quickly() {
    let mut text = String::from(
        "exec: /bin/a\nenv:\n  A: &a0 [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n",
    );
    for i in 1..12 {
        let prev = i - 1;
        text += &format!(
            "  A{i}: &a{i} [*a{prev},*a{prev},*a{prev},*a{prev},*a{prev},*a{prev},*a{prev},*a{prev}]\n"
        );
    }
    let started = Instant::now();
    let result = parse_service(Path::new("/etc/zinit/bomb.yaml"), "bomb", &text);
    assert!(result.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}
