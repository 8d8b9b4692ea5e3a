//! Where the wallet passphrase comes from: `--passphrase-file FILE`, else the environment
//! variable `TANDEM_WALLET_PASSPHRASE`, else a prompt on the terminal without echo.

use super::keystore::Passphrase;
use anyhow::{bail, Context};
use std::path::Path;
use zeroize::Zeroizing;

pub const PASSPHRASE_ENV: &str = "TANDEM_WALLET_PASSPHRASE";
/// The shortest passphrase a new wallet accepts.
pub const MIN_CHARS: usize = 8;

/// Whether the passphrase opens an existing wallet or protects a new one (which asks twice at
/// the prompt and refuses short passphrases).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Unlock,
    Create,
}

pub fn read(file: Option<&Path>, purpose: Purpose) -> anyhow::Result<Passphrase> {
    let env = std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new);
    let passphrase = match (file, env) {
        (Some(path), _) => from_file(path)?,
        (None, Some(value)) if !value.is_empty() => Passphrase::new(value.to_string()),
        _ => prompt(purpose)?,
    };
    if passphrase.chars() == 0 {
        bail!("the passphrase is empty");
    }
    if purpose == Purpose::Create && passphrase.chars() < MIN_CHARS {
        bail!("choose a passphrase of at least {MIN_CHARS} characters");
    }
    Ok(passphrase)
}

/// The file's text without one trailing line break.
fn from_file(path: &Path) -> anyhow::Result<Passphrase> {
    let mut text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading the passphrase file {}", path.display()))?,
    );
    for ending in ["\r\n", "\n"] {
        if text.ends_with(ending) {
            let len = text.len() - ending.len();
            text.truncate(len);
            break;
        }
    }
    Ok(Passphrase::new(text.to_string()))
}

fn prompt(purpose: Purpose) -> anyhow::Result<Passphrase> {
    let no_terminal = |e: std::io::Error| {
        anyhow::anyhow!(
            "cannot ask for the wallet passphrase ({e}): give --passphrase-file FILE or set {PASSPHRASE_ENV}"
        )
    };
    let first = Zeroizing::new(rpassword::prompt_password("Wallet passphrase: ").map_err(no_terminal)?);
    if purpose == Purpose::Create {
        let second = Zeroizing::new(rpassword::prompt_password("Repeat the passphrase: ").map_err(no_terminal)?);
        if *first != *second {
            bail!("the two passphrases differ");
        }
    }
    Ok(Passphrase::new(first.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_passphrase_loses_one_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        for (text, expect) in [
            ("secret words\n", "secret words"),
            ("secret words\r\n", "secret words"),
            ("  spaced  \n\n", "  spaced  \n"),
        ] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(from_file(&path).unwrap().as_bytes(), expect.as_bytes());
        }
        std::fs::write(&path, "short\n").unwrap();
        let e = read(Some(&path), Purpose::Create).unwrap_err().to_string();
        assert!(e.contains("at least 8"), "{e}");
        assert!(read(Some(&path), Purpose::Unlock).is_ok());
        std::fs::write(&path, "\n").unwrap();
        assert!(read(Some(&path), Purpose::Unlock).unwrap_err().to_string().contains("empty"));
        assert!(read(Some(&dir.path().join("missing")), Purpose::Unlock).is_err());
    }
}
