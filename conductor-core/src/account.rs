//! Accounts per environment: the pillar's `environments.<env>.aws`
//! ([`AccountSpec`]), the trait that opens a cloud in such an account
//! ([`CloudAccounts`]), its in-memory implementation ([`MemAccounts`]), and
//! the cache through which a [`Conductor`](crate::Conductor) opens each
//! account once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::cloud::CloudBackend;
use crate::mem_cloud::MemCloud;

/// The AWS account an environment's instances live in (pillar
/// `conductor.environments.<env>.aws`): a role to assume, a profile of the
/// shared AWS config whose credentials to use (and, with `role_arn`, to
/// assume the role with), or both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// The IAM role to assume (`arn:aws:iam::<12 digits>:role/<name>`).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for (needs `role_arn`).
    #[serde(default)]
    pub external_id: Option<String>,
    /// The profile of `~/.aws/config` whose credentials to use.
    #[serde(default)]
    pub profile: Option<String>,
    /// The role session name shown in CloudTrail (needs `role_arn`;
    /// default `conductor-<host>`).
    #[serde(default)]
    pub session_name: Option<String>,
}

impl AccountSpec {
    /// The 12-digit account id of `role_arn`, if one is set.
    pub fn account_id(&self) -> Option<&str> {
        let arn = self.role_arn.as_deref()?;
        let id = arn.split(':').nth(4)?;
        (id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
    }

    /// A short label of the account for keys and logs: the account id of
    /// `role_arn`, else `profile-<profile>` (lowercase; other characters
    /// than `[a-z0-9-]` become `-`).
    pub fn label(&self) -> String {
        if let Some(id) = self.account_id() {
            return id.to_string();
        }
        let profile = self.profile.as_deref().unwrap_or_default();
        let clean: String = profile
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '-') => c,
                _ => '-',
            })
            .collect();
        format!("profile-{clean}")
    }

    /// Checks the settings; the message says what to fix (the caller adds
    /// the pillar path).
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.role_arn.is_none() && self.profile.is_none() {
            return Err((
                "",
                "names no account: give role_arn (a role to assume) or profile (a profile of the AWS config), or remove `aws` to use the default credentials".into(),
            ));
        }
        if let Some(arn) = &self.role_arn {
            let parts: Vec<&str> = arn.splitn(6, ':').collect();
            let ok = parts.len() == 6
                && parts[0] == "arn"
                && parts[1].starts_with("aws")
                && parts[2] == "iam"
                && parts[3].is_empty()
                && self.account_id().is_some()
                && parts[5]
                    .strip_prefix("role/")
                    .is_some_and(|r| !r.is_empty());
            if !ok {
                return Err((
                    "role_arn",
                    format!("{arn:?} is not an IAM role ARN: write arn:aws:iam::<12-digit account id>:role/<name>"),
                ));
            }
        }
        for (key, value, min, max, extra) in [
            ("external_id", &self.external_id, 2, 1224, "+=,.@:/-_"),
            ("session_name", &self.session_name, 2, 64, "+=,.@-_"),
        ] {
            let Some(v) = value else { continue };
            if self.role_arn.is_none() {
                return Err((
                    key,
                    "needs role_arn: it is a setting of the role to assume".into(),
                ));
            }
            let ok_chars = v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
            if !(min..=max).contains(&v.len()) || !ok_chars {
                return Err((
                    key,
                    format!("must be {min} to {max} characters of letters, digits and {extra}"),
                ));
            }
        }
        if let Some(p) = &self.profile {
            if p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err((
                    "profile",
                    format!("{p:?} is not a profile name: give the name of a [profile ...] section of ~/.aws/config"),
                ));
            }
        }
        Ok(())
    }
}

impl AccountSpec {
    /// Refuses what salt-cloud's EC2 driver cannot do: it assumes
    /// `role_arn` itself (with the provider's credentials, a session named
    /// after the master's minion id, at `sts.amazonaws.com`), and takes no
    /// external id nor AWS profile.
    pub(crate) fn check_salt_cloud(&self) -> Result<(), (&'static str, String)> {
        let why = |key| {
            format!(
                "is not supported by salt-cloud's EC2 driver (it assumes role_arn itself, without {key}): use the native provisioner (--provisioner ec2), or remove {key}"
            )
        };
        for (key, set) in [
            ("external_id", self.external_id.is_some()),
            ("profile", self.profile.is_some()),
            ("session_name", self.session_name.is_some()),
        ] {
            if set {
                return Err((key, why(key)));
            }
        }
        Ok(())
    }
}

/// Opens the cloud of an account an environment names: how a
/// [`Conductor`](crate::Conductor) reaches environments whose pillar sets
/// `aws` (each other environment uses the conductor's own cloud).
///
/// The conductor opens each distinct account once and keeps the cloud.
///
/// ```
/// use conductor_core::{AccountSpec, CloudAccounts, MemAccounts, Region, Scope};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let accounts = MemAccounts::new();
/// let prod = AccountSpec {
///     role_arn: Some("arn:aws:iam::222222222222:role/conductor".into()),
///     ..AccountSpec::default()
/// };
/// let cloud = accounts.open(&prod).await?;
/// let everything = Scope::all(Region::new("us-east-1")?);
/// assert!(cloud.inventory(&everything).await?.instances.is_empty());
/// assert_eq!(prod.label(), "222222222222");
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait CloudAccounts: std::fmt::Debug + Send + Sync {
    /// The cloud of `account`: its instances, launched with its credentials.
    async fn open(&self, account: &AccountSpec) -> Result<Arc<dyn CloudBackend>, BackendError>;
}

/// One [`MemCloud`] per account, kept for the life of this value: the
/// accounts of the fake cloud.
#[derive(Debug, Default)]
pub struct MemAccounts {
    clouds: Mutex<HashMap<AccountSpec, Arc<MemCloud>>>,
}

impl MemAccounts {
    /// No account opened yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CloudAccounts for MemAccounts {
    async fn open(&self, account: &AccountSpec) -> Result<Arc<dyn CloudBackend>, BackendError> {
        let mut clouds = self.clouds.lock().unwrap_or_else(|p| p.into_inner());
        let cloud = clouds.entry(account.clone()).or_default().clone();
        Ok(cloud)
    }
}

/// The accounts a conductor has opened, each once (concurrent runs of one
/// account share its cloud, and its credentials cache).
#[derive(Debug)]
pub(crate) struct AccountCache {
    accounts: Arc<dyn CloudAccounts>,
    open: tokio::sync::Mutex<HashMap<AccountSpec, Arc<dyn CloudBackend>>>,
}

impl AccountCache {
    pub(crate) fn new(accounts: Arc<dyn CloudAccounts>) -> Self {
        Self {
            accounts,
            open: tokio::sync::Mutex::default(),
        }
    }

    /// The cloud of `account`, opened on first use.
    pub(crate) async fn cloud(
        &self,
        account: &AccountSpec,
    ) -> Result<Arc<dyn CloudBackend>, BackendError> {
        let mut open = self.open.lock().await;
        if let Some(c) = open.get(account) {
            return Ok(c.clone());
        }
        let cloud = self.accounts.open(account).await?;
        open.insert(account.clone(), cloud.clone());
        Ok(cloud)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(arn: &str) -> AccountSpec {
        AccountSpec {
            role_arn: Some(arn.into()),
            ..AccountSpec::default()
        }
    }

    #[test]
    fn labels_name_the_account() {
        assert_eq!(
            role("arn:aws:iam::111111111111:role/x").label(),
            "111111111111"
        );
        let p = AccountSpec {
            profile: Some("Prod_Admin".into()),
            ..AccountSpec::default()
        };
        assert_eq!(p.label(), "profile-prod-admin");
        assert_eq!(p.account_id(), None);
    }

    #[test]
    fn validation_names_the_key_to_fix() {
        assert!(role("arn:aws:iam::111111111111:role/x").validate().is_ok());
        assert!(role("arn:aws-us-gov:iam::111111111111:role/a/b")
            .validate()
            .is_ok());
        for bad in [
            "arn:aws:iam::1111:role/x",
            "arn:aws:iam::111111111111:user/x",
            "arn:aws:iam::111111111111:role/",
            "arn:aws:s3:::111111111111:role/x",
            "111111111111",
        ] {
            assert_eq!(role(bad).validate().unwrap_err().0, "role_arn", "{bad}");
        }
        assert_eq!(AccountSpec::default().validate().unwrap_err().0, "");
        let orphan = AccountSpec {
            profile: Some("p".into()),
            external_id: Some("xyz".into()),
            ..AccountSpec::default()
        };
        assert_eq!(orphan.validate().unwrap_err().0, "external_id");
        let long_session = AccountSpec {
            session_name: Some("s".repeat(65)),
            ..role("arn:aws:iam::111111111111:role/x")
        };
        assert_eq!(long_session.validate().unwrap_err().0, "session_name");
        let spaced = AccountSpec {
            profile: Some("my profile".into()),
            ..AccountSpec::default()
        };
        assert_eq!(spaced.validate().unwrap_err().0, "profile");
    }

    #[tokio::test]
    async fn accounts_are_opened_once_and_kept_apart() {
        let cache = AccountCache::new(Arc::new(MemAccounts::new()));
        let a = role("arn:aws:iam::111111111111:role/x");
        let b = role("arn:aws:iam::222222222222:role/x");
        let (a1, a2, b1) = (
            cache.cloud(&a).await.unwrap(),
            cache.cloud(&a).await.unwrap(),
            cache.cloud(&b).await.unwrap(),
        );
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b1));
    }
}
