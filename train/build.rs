//! Compiles the C++ shim (with c10d's Gloo process group) against the libtorch tch links
//! (torch-sys exports its location as `DEP_TCH_LIBTORCH_LIB`), makes every target that runs libtorch keep `libtorch_cuda` (so CUDA
//! is registered), and lets every target find libtorch at run time through an rpath.

use std::path::PathBuf;

/// The binaries that run libtorch (every binary in src/bin/ but `plan`).
const TORCH_BINS: &[&str] = &["train", "sample", "eval", "export", "h5gpt-export"];

/// Whether the package directory `dir` holds auto-discovered targets (`*.rs` or `*/main.rs`);
/// when it exists, a change in it reruns this script.
fn has_targets(dir: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    println!("cargo:rerun-if-changed={dir}");
    entries.flatten().any(|e| {
        let path = e.path();
        path.extension().is_some_and(|x| x == "rs") || path.join("main.rs").is_file()
    })
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-env-changed=H5GPT_GLOO_INCLUDE");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys exports DEP_TCH_LIBTORCH_LIB; build with scripts/env.sh sourced"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib/ has a parent")
        .to_path_buf();
    // c10d's Gloo process group: the wheel has the symbols but not the `gloo/` headers
    // (Debian's libgloo-dev has them; scripts/setup.sh installs it).
    let gloo = PathBuf::from(
        std::env::var("H5GPT_GLOO_INCLUDE").unwrap_or_else(|_| "/usr/include".into()),
    );
    assert!(
        gloo.join("gloo/config.h").is_file(),
        "no Gloo headers in {}: run scripts/setup.sh (apt-get install libgloo-dev), or point H5GPT_GLOO_INCLUDE at a directory holding gloo/",
        gloo.display()
    );
    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .file("csrc/dist.cpp")
        .define("USE_C10D_GLOO", None)
        .include(&gloo)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-w")
        .compile("h5gpt_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    // Rust links with --as-needed, which drops libtorch_cuda (nothing references it by name)
    // and with it CUDA's registration; keep it, when this libtorch has it, in every target that
    // runs libtorch. Not in `plan` (and no other torch-free binary): it references no libtorch
    // symbol, so --as-needed leaves libtorch out of it altogether. Cargo has no switch for the
    // library's own unit tests: they run on the CPU backend (the rpath below still finds it).
    if lib.join("libtorch_cuda.so").exists() {
        let keep = "-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed";
        for bin in TORCH_BINS {
            println!("cargo:rustc-link-arg-bin={bin}={keep}");
        }
        println!("cargo:rustc-link-arg-tests={keep}");
        // Cargo refuses these instructions for a package without such targets.
        if has_targets("examples") {
            println!("cargo:rustc-link-arg-examples={keep}");
        }
        if has_targets("benches") {
            println!("cargo:rustc-link-arg-benches={keep}");
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
