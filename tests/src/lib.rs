//! Helpers for the end-to-end tests in `tests/`: locate (and build, once) the workspace
//! binaries, and run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

static BUILD: Once = Once::new();

/// `scripts/env.sh`, whose `H5GPT_TEST_FEATURES` line is the one place that names the features
/// of test builds (`scripts/check.sh` passes the same variable to every cargo command).
const ENV_SH: &str = include_str!("../../scripts/env.sh");

/// The cargo features of test builds (`h5gpt-formats/fault-injection`: the `H5GPT_FAULT`
/// testing aids), read from `scripts/env.sh`'s `export H5GPT_TEST_FEATURES="..."`.
pub fn test_features() -> &'static str {
    ENV_SH
        .lines()
        .find_map(|line| line.strip_prefix("export H5GPT_TEST_FEATURES="))
        .map(|value| value.trim().trim_matches('"'))
        .expect("scripts/env.sh exports H5GPT_TEST_FEATURES")
}

/// Path of workspace binary `name`, built (once per test process) in the test's profile with
/// [`test_features`]: the features `scripts/check.sh` builds and tests with, so this build reuses
/// its artifacts (a plain `cargo test` compiles the h5gpt crates a second time, with them).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        cmd.args(["--features", test_features()]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    profile_dir.join(name)
}

/// The commands that exist only as `h5gpt` subcommands (no executable of their own).
const H5GPT_SUBCOMMANDS: [&str; 5] = ["inspect", "sample", "eval", "export", "plan"];

/// The command line of command `name`: `h5gpt NAME` for the commands that exist only as its
/// subcommands, else the workspace executable `name` (`preprocess`, `train`, `h5gpt`, …).
pub fn command(name: &str) -> Command {
    if H5GPT_SUBCOMMANDS.contains(&name) {
        let mut command = Command::new(bin("h5gpt"));
        command.arg(name);
        command
    } else {
        Command::new(bin(name))
    }
}

/// Runs a command (see [`command`]) with arguments and returns its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    command(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// `"the quick brown fox jumps over the lazy dog. "` × `repeats`, preprocessed with GPT-2's
/// tokenizer into `dir/shards` (rows of 32 tokens; `extra` preprocess flags appended).
pub fn fox_shards(dir: &Path, repeats: usize, extra: &[&str]) -> PathBuf {
    let corpus = dir.join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog. ".repeat(repeats),
    )
    .expect("write the corpus");
    let shards = dir.join("shards");
    let (corpus_arg, shards_arg) = (corpus.display().to_string(), shards.display().to_string());
    let mut args = vec![
        "--input",
        &corpus_arg,
        "--out",
        &shards_arg,
        "--seq-len",
        "32",
    ];
    args.extend_from_slice(extra);
    let o = run("preprocess", &args);
    assert!(o.status.success(), "{}", text(&o));
    shards
}

/// A TCP port on 127.0.0.1 that is free now (for a rendezvous store).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// stdout and stderr of an output as text, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A generated "small language" corpus, deterministic in `seed`: a lexicon of a few hundred
/// Toki-Pona-like words (consonant–vowel syllables), and sentences in which each word is
/// followed, 90% of the time, by one of its own four successor words (Zipf-weighted
/// otherwise), so a model can learn far more than the unigram distribution.
pub mod small_language {
    /// Deterministic splitmix64 stream.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// The lexicon: `n` distinct words, most frequent first.
    pub fn lexicon(n: usize, seed: u64) -> Vec<String> {
        const CONSONANTS: &[u8] = b"ptkmnslwj";
        const VOWELS: &[u8] = b"aeiou";
        let mut rng = Rng(seed ^ 0x5EED);
        let mut words = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while words.len() < n {
            let syllables = 1 + rng.below(3);
            let mut w = String::new();
            for _ in 0..syllables {
                w.push(CONSONANTS[rng.below(CONSONANTS.len())] as char);
                w.push(VOWELS[rng.below(VOWELS.len())] as char);
            }
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        words
    }

    /// `documents` documents of 3–8 sentences over a lexicon of `words` words.
    pub fn corpus(documents: usize, words: usize, seed: u64) -> Vec<String> {
        let lexicon = lexicon(words, seed);
        let mut rng = Rng(seed);
        // Zipf weights, as a cumulative table.
        let mut cumulative = Vec::with_capacity(words);
        let mut total = 0.0;
        for rank in 1..=words {
            total += 1.0 / rank as f64;
            cumulative.push(total);
        }
        let zipf = |rng: &mut Rng| {
            let x = rng.unit() * total;
            cumulative.partition_point(|&c| c < x).min(words - 1)
        };
        let successors: Vec<[usize; 4]> = (0..words)
            .map(|_| std::array::from_fn(|_| zipf(&mut rng)))
            .collect();
        (0..documents)
            .map(|_| {
                let sentences = 3 + rng.below(6);
                let mut doc = String::new();
                for s in 0..sentences {
                    if s > 0 {
                        doc.push(' ');
                    }
                    let length = 4 + rng.below(7);
                    let mut word = zipf(&mut rng);
                    for i in 0..length {
                        if i > 0 {
                            doc.push(' ');
                        }
                        doc.push_str(&lexicon[word]);
                        word = if rng.unit() < 0.9 {
                            successors[word][rng.below(4)]
                        } else {
                            zipf(&mut rng)
                        };
                    }
                    doc.push('.');
                }
                doc
            })
            .collect()
    }

    /// The corpus as JSON lines (`{"text": …}`), one document per line.
    pub fn jsonl(documents: usize, words: usize, seed: u64) -> String {
        corpus(documents, words, seed)
            .into_iter()
            .map(|d| format!("{{\"text\": \"{d}\"}}\n"))
            .collect()
    }
}

/// `train` arguments for a tiny CPU run of `steps` steps on `shards` into `out` (micro-batch 4,
/// 256 tokens a step, no periodic validation).
pub fn tiny_train_args(shards: &Path, out: &Path, steps: usize) -> Vec<String> {
    let (shards, out) = (shards.display().to_string(), out.display().to_string());
    [
        "--shards",
        &shards,
        "--out",
        &out,
        "--model",
        "tiny",
        "--micro-batch",
        "4",
        "--total-batch-tokens",
        "256",
        "--max-steps",
        &steps.to_string(),
        "--eval-every",
        "0",
        "--device",
        "cpu",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// Runs `train` with `args` and returns its output.
pub fn train(args: &[String]) -> Output {
    Command::new(bin("train"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run train: {e}"))
}

#[cfg(test)]
mod tests {
    /// The binaries the e2e tests run carry the `H5GPT_FAULT` hooks their kill tests need.
    #[test]
    fn test_features_turn_on_fault_injection() {
        assert!(super::test_features()
            .split([',', ' '])
            .any(|feature| feature == "h5gpt-formats/fault-injection"));
    }
}
