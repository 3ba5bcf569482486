//! Compiles the C++ shim (with c10d's Gloo process group) against the libtorch tch links
//! (torch-sys exports its location as `DEP_TCH_LIBTORCH_LIB`), makes every target that runs libtorch keep `libtorch_cuda` (so CUDA
//! is registered), and lets every target find libtorch at run time through an rpath.

use std::path::PathBuf;

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

/// The include directories c10d's NCCL process group needs, when this libtorch has CUDA and
/// the venv has them: NCCL's headers (`nvidia/nccl`, from the torch wheel's dependencies) and
/// the CUDA runtime's with `crt/` (`nvidia/cu13`, completed by `cuda-toolkit[cccl,crt]`).
/// `H5GPT_NCCL=0` leaves NCCL out; `H5GPT_NCCL=1` fails the build when they are missing.
fn nccl_includes(torch_root: &std::path::Path, lib: &std::path::Path) -> Option<Vec<PathBuf>> {
    println!("cargo:rerun-if-env-changed=H5GPT_NCCL");
    let wanted = std::env::var("H5GPT_NCCL").ok();
    if wanted.as_deref() == Some("0") {
        return None;
    }
    let site = torch_root.parent()?;
    let (nccl, cuda) = (
        site.join("nvidia/nccl/include"),
        site.join("nvidia/cu13/include"),
    );
    if cuda.is_dir() {
        println!("cargo:rerun-if-changed={}", cuda.display());
    }
    let found = lib.join("libtorch_cuda.so").exists()
        && nccl.join("nccl.h").is_file()
        && cuda.join("cuda_runtime.h").is_file()
        && cuda.join("crt/host_defines.h").is_file();
    if !found && wanted.as_deref() == Some("1") {
        panic!(
            "H5GPT_NCCL=1 but the NCCL build headers are missing: need libtorch_cuda, {}/nccl.h and {}/crt/ (pip install 'cuda-toolkit[cccl,crt]==13.0.2' into the venv)",
            nccl.display(),
            cuda.display()
        );
    }
    found.then(|| vec![nccl, cuda])
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-changed=csrc/guard.h");
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
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/shim.cpp")
        .file("csrc/dist.cpp")
        .define("USE_C10D_GLOO", None)
        .include(&gloo)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-w");
    let nccl = nccl_includes(&root, &lib);
    if let Some(dirs) = &nccl {
        // The same headers give the shim the CUDA runtime's (device properties, the current
        // device, the sync-debug switch).
        build
            .define("USE_C10D_NCCL", None)
            .define("H5GPT_NCCL", None)
            .define("H5GPT_CUDA", None);
        for dir in dirs {
            build.include(dir);
        }
    }
    build.compile("h5gpt_shim");
    if nccl.is_some() {
        // ProcessGroupNCCL lives in libtorch_cuda and uses libc10_cuda; targets that never
        // reach the process group drop both (--as-needed).
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    // Rust links with --as-needed, which drops libtorch_cuda (nothing references it by name)
    // and with it CUDA's registration; keep it, when this libtorch has it, in every target that
    // runs libtorch: every binary of this crate (the torch-free `plan` lives in h5gpt-core).
    // Cargo has no switch for the library's own unit tests: they run on the CPU backend (the
    // rpath below still finds it).
    if lib.join("libtorch_cuda.so").exists() {
        let keep = "-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed";
        println!("cargo:rustc-link-arg-bins={keep}");
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
