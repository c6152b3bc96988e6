//! Reservation keys: what a reserver holds, safe as a file name.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cpid::Cpid;
use crate::input::InputError;
use crate::names::Env;

/// Whether a key reserves an instance name or an id; decides where it is stored
/// (`reserved_names/` or `reserved_ids/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// An instance name: `<env>_<fqdn>`.
    Name,
    /// An id: `<env>_<scope>.id.<N>`, `cpid.<CPID>`, or another counter.
    Id,
}

/// One reservable key; its text is safe as a file name (`[a-z0-9._-]`, no `..`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    kind: KeyKind,
    text: String,
}

impl Key {
    /// Validates `text` as a key of `kind`.
    pub fn new(kind: KeyKind, text: impl Into<String>) -> Result<Self, InputError> {
        let text = text.into();
        let ok_chars = text.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if text.is_empty()
            || text.len() > 255
            || !ok_chars
            || text.contains("..")
            || text.starts_with('.')
        {
            return Err(InputError::invalid(
                "reservation key",
                &text,
                "must be 1 to 255 characters of [a-z0-9._-], not starting with '.' nor holding '..'",
            ));
        }
        Ok(Self { kind, text })
    }

    /// The key of an instance name: `<env>_<fqdn>`, where `env` is the
    /// environment written into the name (the run's saltenv).
    pub fn name(env: &Env, fqdn: &str) -> Result<Self, InputError> {
        Self::new(KeyKind::Name, format!("{env}_{fqdn}"))
    }

    /// The key that keeps a CPID unique while its run lives: `cpid.<CPID>`.
    pub fn cpid(cpid: Cpid) -> Self {
        Self {
            kind: KeyKind::Id,
            text: format!("cpid.{cpid}"),
        }
    }

    /// Name or id.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key text (also its file name).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The environment a key belongs to: the text before the first `_` of
    /// a name or id key (`test` for `test_devops-mq01...`); `None` for keys
    /// of no environment (`cpid.<CPID>`, throttle slots). Reservers that
    /// partition their store by environment use it.
    pub fn env(&self) -> Option<&str> {
        let (env, _) = self.text.split_once('_')?;
        crate::names::check_label("environment", env)
            .is_ok()
            .then_some(env)
    }

    /// Whether the key belongs to `env` (see [`Key::env`]).
    pub fn in_env(&self, env: &Env) -> bool {
        self.env() == Some(env.as_str())
    }

    /// Whether a prune of `env` looks at the key (see [`Reserver::prune`](crate::Reserver::prune)):
    /// without `env` every key; with it, that environment's keys and the
    /// keys of no environment.
    pub fn in_prune_scope(&self, env: Option<&Env>) -> bool {
        env.is_none_or(|e| self.in_env(e) || self.env().is_none())
    }

    /// The instance name a name key reserves, whatever its environment
    /// (`test_devops-mq01...` -> `devops-mq01...`).
    pub fn fqdn(&self) -> Option<&str> {
        (self.kind == KeyKind::Name)
            .then(|| self.text.split_once('_').map(|(_, name)| name))
            .flatten()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Keys joined with `, ` for messages.
pub(crate) fn keys_text(keys: &[Key]) -> String {
    keys.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shapes() {
        let env = Env::new("test").unwrap();
        let k = Key::name(&env, "devops-mq01.us-east-1a.test.foobar.com").unwrap();
        assert_eq!(k.as_str(), "test_devops-mq01.us-east-1a.test.foobar.com");
        assert_eq!(k.fqdn(), Some("devops-mq01.us-east-1a.test.foobar.com"));
        assert_eq!(
            Key::new(KeyKind::Id, "test_devops.system.id.1")
                .unwrap()
                .fqdn(),
            None
        );
        assert_eq!(k.env(), Some("test"));
        assert!(k.in_env(&env) && !k.in_env(&Env::new("tes").unwrap()));
        assert_eq!(Key::cpid(Cpid::generate()).env(), None);
        let id = Key::new(KeyKind::Id, "prod_devops.system.id.3").unwrap();
        assert_eq!(id.env(), Some("prod"));
        assert!(Key::new(KeyKind::Id, "slot.us-east-1.0")
            .unwrap()
            .env()
            .is_none());
        assert!(Key::new(KeyKind::Name, "../etc").is_err());
        assert!(Key::new(KeyKind::Name, "a/b").is_err());
        assert!(Key::new(KeyKind::Name, ".hidden").is_err());
    }
}
