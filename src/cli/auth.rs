//! `--key`, `--key-id`, `--key-file`, `--accept-unauthenticated`: frame authentication
//! options shared by `pub`, `sub`, `ping`, `pong` and `bench`.

use std::path::PathBuf;

use nakcast::proto::auth::{AuthConfig, AuthKey, AuthSecret};

use super::CliError;

/// Frame authentication (off unless a key is given). docs/SECURITY.md explains it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// Authenticate every frame with this shared key: 64 hex digits (32 bytes), e.g. from
    /// `openssl rand -hex 32`. Frames without a valid MAC are dropped and counted. Prefer
    /// --key-file: a key on the command line is visible to other local users.
    #[arg(long, value_name = "HEX", conflicts_with = "key_file")]
    pub key: Option<String>,
    /// Id of the key that seals what this node sends (default: 1 with --key, the first
    /// key of --key-file).
    #[arg(long, value_name = "N")]
    pub key_id: Option<u32>,
    /// Read keys from FILE: lines `ID HEX` (every key listed is accepted; the one named by
    /// --key-id, or the first, seals), or a single line `HEX` (the key of --key-id, default
    /// 1). Blank lines and lines starting with # are ignored.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// With a key, still accept frames without a MAC (for rolling authentication out one
    /// node at a time; no protection against forged frames meanwhile).
    #[arg(long)]
    pub accept_unauthenticated: bool,
}

impl AuthArgs {
    /// The authentication settings these options name (off without a key).
    pub fn config(&self) -> Result<AuthConfig, CliError> {
        let keys = match (&self.key, &self.key_file) {
            (Some(hex), _) => vec![AuthKey {
                id: self.key_id.unwrap_or(1),
                secret: secret(hex, "--key")?,
            }],
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    CliError::Usage(format!("cannot read --key-file {}: {e}", path.display()))
                })?;
                parse_key_file(&text, self.key_id)
                    .map_err(|e| CliError::Usage(format!("--key-file {}: {e}", path.display())))?
            }
            (None, None) => {
                if self.key_id.is_some() || self.accept_unauthenticated {
                    return Err(CliError::Usage(
                        "--key-id and --accept-unauthenticated need --key or --key-file".into(),
                    ));
                }
                return Ok(AuthConfig::default());
            }
        };
        let current = match self.key_id {
            Some(id) => keys.iter().position(|k| k.id == id).ok_or_else(|| {
                CliError::Usage(format!("--key-id {id} is not among the keys given"))
            })?,
            None => 0,
        };
        let mut keys = keys;
        let key = keys.remove(current);
        Ok(AuthConfig {
            key: Some(key),
            accept: keys,
            accept_unauthenticated: self.accept_unauthenticated,
        })
    }
}

fn secret(hex: &str, what: &str) -> Result<AuthSecret, CliError> {
    AuthSecret::from_hex(hex).map_err(|e| CliError::Usage(format!("{what}: {e}")))
}

/// Keys from a key file (see `--key-file`).
fn parse_key_file(text: &str, key_id: Option<u32>) -> Result<Vec<AuthKey>, String> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if let [(n, line)] = lines[..]
        && !line.contains(char::is_whitespace)
    {
        let secret = AuthSecret::from_hex(line).map_err(|e| format!("line {n}: {e}"))?;
        return Ok(vec![AuthKey {
            id: key_id.unwrap_or(1),
            secret,
        }]);
    }
    let mut keys: Vec<AuthKey> = Vec::new();
    for (n, line) in lines {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {n}: expected `ID HEX`"));
        };
        let id: u32 = id
            .parse()
            .map_err(|_| format!("line {n}: {id:?} is not a key id (0 ..= 4294967295)"))?;
        let secret = AuthSecret::from_hex(hex).map_err(|e| format!("line {n}: {e}"))?;
        if keys.iter().any(|k| k.id == id) {
            return Err(format!("line {n}: key id {id} listed twice"));
        }
        keys.push(AuthKey { id, secret });
    }
    if keys.is_empty() {
        return Err("no key in the file".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn key_files_name_keys_and_the_current_one() {
        let one = parse_key_file(&format!("# comment\n\n{A}\n"), None).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id, 1);
        let ring = parse_key_file(&format!("7 {A}\n8 {B}\n"), None).unwrap();
        assert_eq!(ring.iter().map(|k| k.id).collect::<Vec<_>>(), [7, 8]);
        assert!(parse_key_file(&format!("7 {A}\n7 {B}\n"), None).is_err());
        assert!(parse_key_file("x y z", None).is_err());
        assert!(parse_key_file("", None).is_err());
        assert!(parse_key_file(&format!("7 {A}\nnope {B}"), None).is_err());

        let dir = std::env::temp_dir().join(format!("nakcast-keys-{}", std::process::id()));
        std::fs::write(&dir, format!("7 {A}\n8 {B}\n")).unwrap();
        let args = AuthArgs {
            key_file: Some(dir.clone()),
            key_id: Some(8),
            ..AuthArgs::default()
        };
        let cfg = args.config().unwrap();
        assert_eq!(cfg.key.as_ref().unwrap().id, 8);
        assert_eq!(cfg.accept.iter().map(|k| k.id).collect::<Vec<_>>(), [7]);
        let missing = AuthArgs {
            key_id: Some(9),
            ..args
        };
        assert!(missing.config().is_err());
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn no_key_means_off_and_stray_options_are_refused() {
        assert!(!AuthArgs::default().config().unwrap().is_on());
        let stray = AuthArgs {
            key_id: Some(3),
            ..AuthArgs::default()
        };
        assert!(stray.config().is_err());
        let bad = AuthArgs {
            key: Some("abcd".into()),
            ..AuthArgs::default()
        };
        assert!(bad.config().is_err());
        let good = AuthArgs {
            key: Some(A.into()),
            key_id: Some(4),
            ..AuthArgs::default()
        };
        let cfg = good.config().unwrap();
        assert!(cfg.is_required());
        assert_eq!(cfg.key.unwrap().id, 4);
    }
}
