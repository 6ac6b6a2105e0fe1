//! The build script of every Glimpse program (`build = ".../scripts/build-info.rs"`
//! in its Cargo.toml): what `--version` prints beside the version, as
//! `GLIMPSE_BUILD_*` variables for `glimpse_files::long_version!`.
//!
//! The git commit is looked up only outside the dev profile (or taken from
//! `GLIMPSE_GIT_COMMIT`, for builds from a tarball or by a packager): a
//! commit then re-runs this script and rebuilds the program's crate, which
//! a release build can afford and a test cycle should not pay on every
//! commit. Without git, or outside a repository, the commit is "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Any rerun-if line (this one at least) stops cargo re-running the
    // script on every change in the package.
    println!("cargo:rerun-if-env-changed=GLIMPSE_GIT_COMMIT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let profile = profile_name();
    let commit = std::env::var("GLIMPSE_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty() && c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-'))
        .or_else(|| if profile == "debug" { None } else { git_commit(&manifest_dir) })
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = std::env::var_os("RUSTC")
        .and_then(|rustc| Command::new(rustc).arg("-V").output().ok())
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=GLIMPSE_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=GLIMPSE_BUILD_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    println!("cargo:rustc-env=GLIMPSE_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=GLIMPSE_BUILD_RUSTC={rustc}");
}

/// The profile's own name (`agent`, not the `release` it inherits): the
/// directory above `build/` in OUT_DIR, which cargo names after it.
fn profile_name() -> String {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_owned()))
}

/// `git` in `dir`, its output trimmed, or `None` (no git, no repository).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").current_dir(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The commit checked out, and the files that change when it does (HEAD,
/// the branch's ref, packed refs) so that the next commit re-runs this.
fn git_commit(dir: &Path) -> Option<String> {
    let commit = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec![git(dir, &["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(dir, &["rev-parse", "--git-path", &branch]));
    }
    watched.extend(git(dir, &["rev-parse", "--git-path", "packed-refs"]));
    for path in watched {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}
