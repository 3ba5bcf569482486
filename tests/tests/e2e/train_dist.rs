//! Data-parallel `train` on CPU: ranks started by hand with torchrun's variables (`RANK`,
//! `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) talk through Gloo on localhost. Two ranks
//! reproduce one rank's losses and weights, checkpoints move between world sizes, a dead rank
//! stops the others, a signal on one rank checkpoints them all.

use h5gpt_tests::{bin, free_port, run, text};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on now.
pub(crate) fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// Shards of 32-token rows from a small generated corpus.
fn shards(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus.txt");
    let body: String = (0..3000)
        .map(|i| format!("word{} and word{} ", i % 97, (i * 7) % 31))
        .collect();
    std::fs::write(&corpus, body).unwrap();
    let out = dir.join("shards");
    let o = run(
        "preprocess",
        &["--input", &p(&corpus), "--out", &p(&out), "--seq-len", "32"],
    );
    assert!(o.status.success(), "{}", text(&o));
    out
}

/// `train` arguments: a tiny model, micro-batches of 1 row (the global batch comes out at 4
/// rows: 4 micro-batches on one rank, 2 on each of two), `steps` steps.
fn args(shards: &Path, out: &Path, steps: usize) -> Vec<String> {
    [
        "--shards",
        &p(shards),
        "--out",
        &p(out),
        "--model",
        "tiny",
        "--micro-batch",
        "1",
        "--total-batch-tokens",
        "256",
        "--max-steps",
        &steps.to_string(),
        "--warmup-steps",
        "2",
        "--save-every",
        "4",
        "--keep-checkpoints",
        "5",
        "--eval-every",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Rank `rank` of `world` with the store at 127.0.0.1:`port`, started as `torchrun --no-python
/// h5gpt train …` starts it: `h5gpt train` with torchrun's variables (the single-process runs
/// use the standalone `train`, so both entry points run every data-parallel check).
fn rank_command(args: &[String], rank: usize, world: usize, port: u16) -> Command {
    let mut cmd = Command::new(bin("h5gpt"));
    cmd.arg("train")
        .args(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string());
    cmd
}

/// Runs `world` ranks (1: a plain process) to completion; returns rank 0's output.
pub(crate) fn run_ranks(args: &[String], world: usize) -> Output {
    run_ranks_with(args, world, &[])
}

/// [`run_ranks`] with extra environment variables.
pub(crate) fn run_ranks_with(args: &[String], world: usize, envs: &[(&str, &str)]) -> Output {
    if world == 1 {
        let o = Command::new(bin("train"))
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        return o;
    }
    let port = free_port();
    let others: Vec<Child> = (1..world)
        .map(|r| {
            rank_command(args, r, world, port)
                .envs(envs.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let o = rank_command(args, 0, world, port)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    for child in others {
        let other = child.wait_with_output().unwrap();
        assert!(other.status.success(), "rank ≥ 1: {}", text(&other));
        assert!(
            other.stdout.is_empty(),
            "only rank 0 logs: {}",
            text(&other)
        );
    }
    assert!(o.status.success(), "rank 0: {}", text(&o));
    o
}

/// Per-step training losses from `metrics.jsonl`.
fn losses(out: &Path) -> BTreeMap<u64, f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()?)))
        .collect()
}

fn assert_close(what: &str, a: f64, b: f64) {
    let rel = (a - b).abs() / a.abs().max(b.abs()).max(1e-12);
    assert!(rel <= 1e-4, "{what}: {a} vs {b} (relative {rel:.2e})");
}

/// The f32 tensors of a safetensors file, by name.
fn read_safetensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, info)| {
            assert_eq!(info["dtype"], "F32", "{name}");
            let range = &info["data_offsets"];
            let (a, b) = (
                range[0].as_u64().unwrap() as usize,
                range[1].as_u64().unwrap() as usize,
            );
            let values = data[a..b]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name.clone(), values)
        })
        .collect()
}

/// Reads `child`'s stdout until its first step line (the ranks are training), then returns
/// the lines read and a thread that collects the rest.
fn wait_for_a_step(child: &mut Child) -> (String, std::thread::JoinHandle<String>) {
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "rank 0 ended before a step: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with("step ") {
            break;
        }
    }
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        rest
    });
    (seen, rest)
}

fn checkpoint(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:08}"))
}

fn position(out: &Path, step: usize) -> u64 {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(checkpoint(out, step).join("state.json")).unwrap())
            .unwrap();
    state["position"].as_u64().unwrap()
}

#[test]
fn train_two_ranks_match_one_rank_on_the_same_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    run_ranks(&args(&data, &one, 10), 1);
    let o = run_ranks(&args(&data, &two, 10), 2);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("data parallel: 2 ranks (gloo)"), "{stdout}");
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 10, "{a:?}");
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (step, loss) in &a {
        assert_close(&format!("loss of step {step}"), *loss, b[step]);
    }
    let (wa, wb) = (
        read_safetensors(&checkpoint(&one, 10).join("model.safetensors")),
        read_safetensors(&checkpoint(&two, 10).join("model.safetensors")),
    );
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (name, x) in &wa {
        for (i, (u, v)) in x.iter().zip(&wb[name]).enumerate() {
            let diff = (u - v).abs();
            assert!(
                diff <= 1e-4 * u.abs().max(v.abs()).max(1.0),
                "{name}[{i}]: {u} vs {v}"
            );
        }
    }
}

/// `--dtype bf16-pure` under data parallelism: the fp32 main gradients are the views into the
/// buckets that are all-reduced; two ranks give one rank's losses (bf16 rounding allows 1e-3
/// relative here) and fp32 master checkpoints.
#[test]
fn train_bf16_pure_two_ranks_match_one_rank() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let pure = |out: &Path| {
        let mut a = args(&data, out, 4);
        a.extend(["--dtype".to_string(), "bf16-pure".to_string()]);
        a
    };
    run_ranks(&pure(&one), 1);
    run_ranks(&pure(&two), 2);
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 4, "{a:?}");
    for (step, loss) in &a {
        let rel = (loss - b[step]).abs() / loss;
        assert!(rel < 1e-3, "step {step}: {loss} vs {}", b[step]);
    }
    // read_safetensors asserts every tensor is F32: the masters, not bf16 weights.
    let (wa, wb) = (
        read_safetensors(&checkpoint(&one, 4).join("model.safetensors")),
        read_safetensors(&checkpoint(&two, 4).join("model.safetensors")),
    );
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
}

/// Checkpoints at `first` ranks, resumes at `second` from the step-4 checkpoint.
fn resume_across_world_sizes(first: usize, second: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let (full, moved) = (dir.path().join("full"), dir.path().join("moved"));
    run_ranks(&args(&data, &full, 8), 1);
    run_ranks(&args(&data, &moved, 8), first);
    // Back to the step-4 checkpoint, as if the run had stopped there.
    std::fs::remove_dir_all(checkpoint(&moved, 8)).unwrap();
    assert_eq!(position(&moved, 4), position(&full, 4));
    let o = run_ranks(&args(&data, &moved, 8), second);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("(step 4)"), "{stdout}");
    assert_eq!(
        position(&moved, 8),
        position(&full, 8),
        "same data position"
    );
    let (a, b) = (losses(&full), losses(&moved));
    assert_eq!(b.len(), 8, "{b:?}");
    for step in 4..8 {
        assert_close(&format!("loss of step {step}"), a[&step], b[&step]);
    }
}

#[test]
fn train_checkpoint_at_two_ranks_resumes_at_one() {
    resume_across_world_sizes(2, 1);
}

#[test]
fn train_checkpoint_at_one_rank_resumes_at_two() {
    resume_across_world_sizes(1, 2);
}

#[test]
fn train_dead_rank_stops_the_other_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let mut a = args(&data, &dir.path().join("run"), 100_000);
    a.extend(["--dist-timeout".to_string(), "5".to_string()]);
    let port = free_port();
    let mut doomed = rank_command(&a, 1, 2, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut survivor = rank_command(&a, 0, 2, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, rest) = wait_for_a_step(&mut survivor);
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let killed = Instant::now();
    let o = survivor.wait_with_output().unwrap();
    rest.join().unwrap();
    let waited = killed.elapsed();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        waited < Duration::from_secs(5 + 20),
        "exited {waited:?} after the kill"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("rank 0 of 2"), "{}", text(&o));
}

#[test]
fn train_sigterm_on_one_rank_checkpoints_and_stops_all() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let out = dir.path().join("run");
    let a = args(&data, &out, 100_000);
    let port = free_port();
    let signalled = rank_command(&a, 1, 2, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rank0 = rank_command(&a, 0, 2, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (seen, rest) = wait_for_a_step(&mut rank0);
    let status = Command::new("kill")
        .args(["-TERM", &signalled.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (o0, o1) = (
        rank0.wait_with_output().unwrap(),
        signalled.wait_with_output().unwrap(),
    );
    assert!(o0.status.success(), "rank 0: {}", text(&o0));
    assert!(o1.status.success(), "rank 1: {}", text(&o1));
    let stdout = seen + &rest.join().unwrap();
    assert!(
        stdout.contains("stopped by a signal after step"),
        "{stdout}"
    );
    let done = losses(&out).len();
    assert!(
        checkpoint(&out, done).join("state.json").is_file(),
        "checkpoint after step {done}: {stdout}"
    );
}

/// `--no-pack` shards of documents of many lengths: most rows are partly masked, with different
/// counts of loss tokens.
fn unpacked_shards(dir: &Path) -> PathBuf {
    let corpus = dir.join("docs.jsonl");
    let body: String = (0..400)
        .map(|i| {
            let words: Vec<String> = (0..(i * 7) % 23 + 1)
                .map(|w| format!("word{}", (i * 13 + w * 5) % 61))
                .collect();
            format!("{{\"text\": \"{}\"}}\n", words.join(" "))
        })
        .collect();
    std::fs::write(&corpus, body).unwrap();
    let out = dir.join("unpacked");
    let o = run(
        "preprocess",
        &[
            "--input",
            &p(&corpus),
            "--out",
            &p(&out),
            "--seq-len",
            "32",
            "--no-pack",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    out
}

/// The step's loss and gradient are the mean over the global batch's loss tokens (Megatron's
/// per-token loss), not a mean of micro-batch means: on rows with different counts of loss
/// tokens, micro-batches of 2 and of 8 rows, and 1 and 2 ranks, give the same per-step losses
/// (1e-5 relative: only the order of fp32 sums differs) for a global batch of 8 rows.
#[test]
fn train_loss_is_the_mean_over_the_global_batch_whatever_the_micro_batch_and_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let data = unpacked_shards(dir.path());
    let run_with = |name: &str, micro: &str, world: usize| {
        let out = dir.path().join(name);
        let mut a = args(&data, &out, 6);
        let at = a.iter().position(|x| x == "--micro-batch").unwrap();
        a[at + 1] = micro.to_string();
        // Exactly 8 rows per step, never shrunk for the small data set.
        let at = a.iter().position(|x| x == "--total-batch-tokens").unwrap();
        a.splice(at..at + 2, ["--batch-size".to_string(), "8".to_string()]);
        run_ranks(&a, world);
        losses(&out)
    };
    let eight = run_with("mb8", "8", 1);
    let two = run_with("mb2", "2", 1);
    let ranks = run_with("ranks2", "2", 2);
    assert_eq!(eight.len(), 6, "{eight:?}");
    for (step, loss) in &eight {
        for (what, other) in [("--micro-batch 2", &two), ("2 ranks", &ranks)] {
            let rel = (loss - other[step]).abs() / loss.abs();
            assert!(
                rel <= 1e-5,
                "step {step}: {loss} at --micro-batch 8 vs {} with {what} (relative {rel:.2e})",
                other[step]
            );
        }
    }
}
