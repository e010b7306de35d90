//! Where the per-user cache and its key are (XDG base directories).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The per-user cache: compiled components in `dir/components`, trusted
/// with the key in `key_dir/cache-key`. The key is kept apart from the
/// entries, so that whoever can write the cache (a stage granted
/// `~/.cache`, a CI cache restored from elsewhere) cannot also choose the
/// key its entries are checked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCache {
    pub dir: PathBuf,
    pub key_dir: PathBuf,
}

/// The file of the key in [`UserCache::key_dir`].
pub const KEY_NAME: &str = "cache-key";

/// What `--cache-dir` / `$CAPSTAN_CACHE_DIR` says to do without a per-user
/// cache.
pub const NONE: &str = "none";

impl UserCache {
    /// The per-user cache: `given` (`--cache-dir` or `$CAPSTAN_CACHE_DIR`;
    /// [`NONE`]: none), else `$XDG_CACHE_HOME/capstan`, else
    /// `~/.cache/capstan`. `None` without a per-user cache, or when no
    /// home gives one.
    pub fn locate(
        given: Option<&Path>,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Option<UserCache> {
        let dir = match given {
            Some(path) if path == Path::new(NONE) => return None,
            Some(path) => std::path::absolute(path).ok()?,
            None => base(&env, "XDG_CACHE_HOME", ".cache")?.join("capstan"),
        };
        Some(UserCache {
            dir,
            key_dir: Self::key_dir(env)?,
        })
    }

    /// Where the per-user key is kept, whether or not a cache uses it:
    /// `$XDG_STATE_HOME/capstan`, else `~/.local/state/capstan`.
    pub fn key_dir(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
        Some(base(&env, "XDG_STATE_HOME", ".local/state")?.join("capstan"))
    }

    /// The key file.
    pub fn key(&self) -> PathBuf {
        self.key_dir.join(KEY_NAME)
    }
}

/// An XDG base directory: the variable when it holds an absolute path
/// (relative ones are ignored, as the specification says), else `$HOME`
/// joined with `default`.
fn base(env: &impl Fn(&str) -> Option<OsString>, var: &str, default: &str) -> Option<PathBuf> {
    let absolute = |v: OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    env(var)
        .and_then(absolute)
        .or_else(|| Some(env("HOME").and_then(absolute)?.join(default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn where_the_per_user_cache_and_its_key_are() {
        let home = [("HOME", "/home/u")];
        let at = |dir: &str, key: &str| {
            Some(UserCache {
                dir: dir.into(),
                key_dir: key.into(),
            })
        };
        assert_eq!(
            UserCache::locate(None, env(&home)),
            at("/home/u/.cache/capstan", "/home/u/.local/state/capstan")
        );
        let xdg = [
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "/c"),
            ("XDG_STATE_HOME", "/s"),
        ];
        assert_eq!(
            UserCache::locate(None, env(&xdg)),
            at("/c/capstan", "/s/capstan")
        );
        // Relative XDG paths are ignored; an empty one too.
        let relative = [
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "rel"),
            ("XDG_STATE_HOME", ""),
        ];
        assert_eq!(
            UserCache::locate(None, env(&relative)),
            at("/home/u/.cache/capstan", "/home/u/.local/state/capstan")
        );
        // Given: used as it is; the key stays where it is.
        assert_eq!(
            UserCache::locate(Some(Path::new("/team/cache")), env(&xdg)),
            at("/team/cache", "/s/capstan")
        );
        assert_eq!(UserCache::locate(Some(Path::new("none")), env(&xdg)), None);
        // No home: no per-user cache.
        assert_eq!(UserCache::locate(None, env(&[])), None);
        assert_eq!(
            UserCache::locate(None, env(&[("XDG_CACHE_HOME", "/c")])),
            None
        );
    }
}
