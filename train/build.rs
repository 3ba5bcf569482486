//! Compiles the C++ shim against the libtorch tch links (torch-sys exports its location as
//! `DEP_TCH_LIBTORCH_LIB`), and makes every linked target keep `libtorch_cuda` (so CUDA is
//! registered) and find libtorch at run time through an rpath.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys exports DEP_TCH_LIBTORCH_LIB; build with scripts/env.sh sourced"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib/ has a parent")
        .to_path_buf();
    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-w")
        .compile("h5gpt_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    // Rust links with --as-needed, which drops libtorch_cuda (nothing references it by name)
    // and with it CUDA's registration; keep it, when this libtorch has it.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
