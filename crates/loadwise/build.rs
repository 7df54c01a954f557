//! Gives the shared library its SONAME, `libloadwise.so.N`, N being the C ABI's version.
//!
//! A program linked with `-lloadwise` then records `libloadwise.so.N`, so it loads only a
//! library of the same ABI; a change that breaks the ABI raises N here and
//! `LW_ABI_VERSION` in `src/ffi/codes.rs` together (a unit test checks they agree).

/// The C ABI's version: the N of `libloadwise.so.N`.
const ABI_VERSION: u32 = 1;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=LOADWISE_ABI_VERSION={ABI_VERSION}");
    // ELF platforms only: macOS names a library by its install name, Windows by its file.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libloadwise.so.{ABI_VERSION}");
    }
}
