//! Records the git commit moegrad is built from (for each run's `run.json`), or nothing
//! when the source is not a git checkout.

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    let commit = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok().filter(|o| o.status.success());
    if let Some(out) = commit {
        let dirty = std::process::Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]).output().is_ok_and(|o| !o.stdout.is_empty());
        println!("cargo:rustc-env=MOEGRAD_GIT_COMMIT={}{}", String::from_utf8_lossy(&out.stdout).trim(), if dirty { "-dirty" } else { "" });
    }
}
