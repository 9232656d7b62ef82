//! Compiles `ebpf/halyard_xdp.c` into `$OUT_DIR/halyard_xdp.o` with clang-19.
//!
//! Installs nothing: when clang-19 or the libbpf headers are missing the build fails with a
//! message naming the Debian packages to install (`clang-19 libbpf-dev`).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const PACKAGES: &str = "clang-19 libbpf-dev";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let source = manifest.join("../../ebpf/halyard_xdp.c");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("halyard_xdp.o");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=HALYARD_CLANG");

    let clang = env::var("HALYARD_CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    let arch_include = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail("/usr/include/bpf/bpf_helpers.h not found (libbpf headers are missing)");
    }

    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .status();
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "{clang} failed to compile {} ({status})",
            source.display()
        )),
        Err(err) => fail(&format!("cannot run `{clang}`: {err}")),
    }
}

fn fail(what: &str) -> ! {
    eprintln!(
        "error: building the Halyard XDP program: {what}.\n\
         Install the eBPF toolchain with: apt-get install -y {PACKAGES}\n\
         (set HALYARD_CLANG to use another clang that targets bpf)"
    );
    std::process::exit(1);
}
