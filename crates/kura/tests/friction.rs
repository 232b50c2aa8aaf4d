//! The runbooks' setups without friction (issue 13), through the real binary.
mod common;

use common::*;

#[test]
fn warnings_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok"), b"ok").unwrap();
    // A file that cannot be read: a WARN line on stderr.
    let out = k.run(&["backup", src.to_str().unwrap(), "/proc/self/mem"]);
    let e = stderr(&out);
    assert!(e.contains("WARN"), "{e}");
    assert!(!e.contains('\u{1b}'), "no escape codes for cron mail or the journal: {e:?}");
}

#[test]
fn snapshots_of_an_unknown_target_is_an_error_listing_the_configured_ones() {
    let mut k = Kura::new();
    config(&mut k, "[target.exports]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\n");
    k.init();
    let out = k.run(&["snapshots", "--target", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no target named \"nosuch\" (configured: exports)"), "{}", stderr(&out));
}

#[test]
fn init_takes_the_password_file_from_kura_toml() {
    let k = Kura::new();
    let pw = k.path("pw");
    std::fs::write(&pw, b"from the config\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!("[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\n", k.repo, pw.display()),
    )
    .unwrap();
    let init = k
        .cmd(&["init"])
        .env_remove("KURA_PASSWORD")
        .env_remove("KURA_REPOSITORY")
        .env("KURA_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    // The repository opens with that password, and not with another.
    let ok = k.cmd(&["snapshots"]).env("KURA_PASSWORD", "from the config").output().unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let wrong = k.cmd(&["snapshots"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(11));
}
