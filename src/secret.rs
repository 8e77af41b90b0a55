//! Secrets kept out of the configuration file: every secret setting `x` has
//! an `x_env` form (the name of an environment variable, as an
//! `EnvironmentFile=` sets it) and an `x_file` form (a file holding it, as a
//! container secret under `/run/secrets/` or a systemd credential under
//! `/run/credentials/<unit>/` is); the file's content is the secret, without
//! the line break that ends it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error("`{key}_env` or `{key}_file` is required")]
    Missing { key: String },
    #[error("`{key}_env` and `{key}_file` are both set: keep one")]
    Both { key: String },
    #[error("`{key}_env` names ${name}, which is not set (or not UTF-8)")]
    NoVariable { key: String, name: String },
    #[error("`{key}_file` {}: {reason}", path.display())]
    File {
        key: String,
        path: PathBuf,
        reason: String,
    },
}

/// The secret `key` from the variable `env` or the file `file`; `None` when
/// neither is set.
pub fn read(
    key: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, SecretError> {
    match (env, file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(SecretError::Both {
            key: key.to_string(),
        }),
        (Some(name), None) => match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(Some(value)),
            _ => Err(SecretError::NoVariable {
                key: key.to_string(),
                name: name.to_string(),
            }),
        },
        (None, Some(path)) => {
            let file_error = |reason: String| SecretError::File {
                key: key.to_string(),
                path: path.to_path_buf(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
            let value = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            if value.is_empty() {
                return Err(file_error("empty".into()));
            }
            Ok(Some(value.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_from_a_variable_or_a_file_never_both() {
        let dir = std::env::temp_dir().join(format!("sav-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("store-url");
        std::fs::write(&file, "postgres://sav:pw@db/sav\n").unwrap();
        assert_eq!(
            read("url", None, Some(&file)),
            Ok(Some("postgres://sav:pw@db/sav".into())),
            "the final line break is not the secret's"
        );
        std::fs::write(&file, "with\ninner line\r\n").unwrap();
        assert_eq!(
            read("url", None, Some(&file)),
            Ok(Some("with\ninner line".into()))
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            read("url", None, Some(&file)),
            Err(SecretError::File { .. })
        ));
        let absent = dir.join("absent");
        let error = read("url", None, Some(&absent)).unwrap_err();
        assert!(error.to_string().starts_with("`url_file` "), "{error}");
        assert_eq!(read("url", None, None), Ok(None));
        assert_eq!(
            read("url", Some("PATH"), Some(&file)),
            Err(SecretError::Both { key: "url".into() })
        );
        // PATH is set in any test environment.
        assert!(matches!(read("url", Some("PATH"), None), Ok(Some(_))));
        assert_eq!(
            read("url", Some("SAV_TEST_SURELY_UNSET_VARIABLE"), None),
            Err(SecretError::NoVariable {
                key: "url".into(),
                name: "SAV_TEST_SURELY_UNSET_VARIABLE".into()
            })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
