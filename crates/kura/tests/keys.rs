//! Keys and passwords: several keys per repository, every password source,
//! and no password where it could leak.
mod common;

use common::*;

#[test]
fn key_add_list_remove() {
    let k = Kura::new();
    k.init();
    let pw2 = k.path("pw2");
    std::fs::write(&pw2, "second password\n").unwrap();
    k.ok(&["key", "add", "--new-password-file", pw2.to_str().unwrap()]);
    let keys = k.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let first = keys.as_array().unwrap().iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The second password opens the repository too.
    let out =
        k.cmd(&["snapshots"]).env_remove("KURA_PASSWORD").env("KURA_PASSWORD_FILE", &pw2).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Removing the key in use is refused; with the other password it works.
    let refused = k.run(&["key", "remove", &first[..8]]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("opened the repository with"));
    let out = k
        .cmd(&["key", "remove", &first[..8]])
        .env_remove("KURA_PASSWORD")
        .env("KURA_PASSWORD_FILE", &pw2)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let old = k.run(&["snapshots"]);
    assert_eq!(old.status.code(), Some(11), "the removed password no longer opens it");

    // The last key cannot go.
    let keys = k
        .cmd(&["key", "list", "--json"])
        .env_remove("KURA_PASSWORD")
        .env("KURA_PASSWORD_FILE", &pw2)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);

    // Password from a command, and a warning for a world-readable file.
    let out = k
        .cmd(&["snapshots"])
        .env_remove("KURA_PASSWORD")
        .env("KURA_PASSWORD_COMMAND", format!("cat {}", pw2.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        k.cmd(&["snapshots"]).env_remove("KURA_PASSWORD").env("KURA_PASSWORD_FILE", &pw2).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("readable by others"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn passwords_never_reach_process_arguments_or_repository_metadata() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    k.backup(&[&src]);
    // Nothing stored in the repository contains the password in clear.
    let mut stack = vec![std::path::PathBuf::from(&k.repo)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "{p:?}");
            }
        }
    }
    // The CLI has no flag that takes a password value.
    let help = k.ok(&["--help"]);
    assert!(!help.contains("--password "), "{help}");
}

#[test]
fn a_config_holding_a_secret_and_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let k = Kura::new();
    k.init();
    let cfg = k.path("kura.toml");
    let run = |text: &str, mode: u32| -> String {
        std::fs::write(&cfg, text).unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(mode)).unwrap();
        let out =
            k.cmd(&["snapshots"]).env_remove("KURA_REPOSITORY").env("KURA_CONFIG", &cfg).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let repo = format!("[repository.main]\nurl = \"{}\"\n\n", k.repo);
    let literal = &format!(
        "{repo}[target.shop]\ntype = \"mysql\"\nurl = \"mysql://app:hunter2-secret@127.0.0.1/shop\"\n"
    );
    let said = run(literal, 0o644);
    assert!(
        said.contains("readable by others (mode 644)")
            && said.contains("target.shop.url")
            && said.contains("chmod 600"),
        "{said}"
    );
    assert!(!said.contains("hunter2-secret"), "the warning must not repeat the secret: {said}");
    assert!(!run(literal, 0o600).contains("readable by others"), "a private config is fine");
    let from_env =
        format!("{repo}[target.shop]\ntype = \"mysql\"\nurl = \"mysql://app:${{SHOP_PW}}@127.0.0.1/shop\"\n");
    std::fs::write(&cfg, from_env).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = k
        .cmd(&["snapshots"])
        .env_remove("KURA_REPOSITORY")
        .env("KURA_CONFIG", &cfg)
        .env("SHOP_PW", "x")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("readable by others"),
        "a secret taken from the environment is not in the file"
    );
}
