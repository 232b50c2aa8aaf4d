//! `kura key list|add|remove`: the passwords that open a repository.
use crate::cli::{Global, KeyArgs, KeyCommand};
use crate::output::{print_json, say, Failure};

pub async fn run(g: &Global, a: &KeyArgs) -> Result<u8, Failure> {
    let repo = super::open_repo(g).await?;
    match &a.command {
        KeyCommand::Add { new_password_file } => {
            let pw = crate::password::read_new_password(g, new_password_file.as_deref(), None)
                .map_err(|f| f.context("new password"))?;
            let id = repo.add_key(&pw, super::kdf_params(), &super::hostname(), &super::username()).await?;
            if g.json {
                print_json(&serde_json::json!({ "added": id }));
            }
            say(g, format!("added key {}", id.short()));
        }
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            if g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| {
                        serde_json::json!({
                            "id": id, "current": *id == repo.key_id(), "created": k.created,
                            "hostname": k.hostname, "username": k.username,
                        })
                    })
                    .collect();
                print_json(&v);
            } else {
                crate::output::outln!("  {:<8}  {:<20}  {:<12}  user", "id", "created", "host");
                for (id, k) in keys {
                    let mark = if id == repo.key_id() { "*" } else { " " };
                    crate::output::outln!(
                        "{mark} {:<8}  {:<20}  {:<12}  {}",
                        id.short(),
                        k.created.format("%Y-%m-%d %H:%M:%S"),
                        k.hostname,
                        k.username
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(id).await?;
            if g.json {
                print_json(&serde_json::json!({ "removed": removed }));
            }
            say(g, format!("removed key {}", removed.short()));
        }
    }
    Ok(0)
}
