//! Writes the generated small-language corpus the tokenizer tests use, for demos and the
//! GPT-2-versus-trained-vocabulary comparison (`scripts/bench-small-corpus.sh`):
//! `cargo run --release -p h5gpt-tests --example small_language -- OUT.jsonl [DOCUMENTS] [WORDS] [SEED]`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        eprintln!("usage: small_language OUT.jsonl [DOCUMENTS=4000] [WORDS=300] [SEED=1]");
        std::process::exit(2);
    };
    let arg = |i: usize, default: u64| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let text =
        h5gpt_tests::small_language::jsonl(arg(1, 4000) as usize, arg(2, 300) as usize, arg(3, 1));
    std::fs::write(out, text).expect("write the corpus");
}
