use crate::cli::{DumpArgs, Global};
use crate::output::Failure;

pub async fn run(g: &Global, a: &DumpArgs) -> Result<u8, Failure> {
    let repo = super::open_repo(g).await?;
    let (_, snap) = repo.find_snapshot(&a.snapshot).await?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    kura_repo::restore::dump(&repo, snap.tree, &a.path, &mut out).await?;
    Ok(0)
}
