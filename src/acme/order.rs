//! One certificate order (RFC 8555 §7.4): the account, the challenges
//! answered while the CA checks them, the CSR, the chain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::store::{write_secret, StateDir};
use super::Challenges;
use crate::model::{Acme, AcmeChallenge};
use crate::tls;

/// How long the CA may take to validate every name, then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);

/// A new certificate for `settings.domains`: its chain and key, PEM.
pub struct Obtained {
    pub chain_pem: String,
    pub key_pem: String,
}

/// A failed order, and whether the CA got as far as checking challenges
/// (which counts against its failed-validation limits).
pub struct Failure {
    pub error: anyhow::Error,
    pub validated: bool,
}

/// A certificate for `settings.domains`; a renewal names the certificate
/// it `replaces`, which a CA with renewal information (RFC 9773 §5) may
/// let skip its rate limits.
pub async fn obtain(
    settings: &Acme,
    challenges: &Challenges,
    replaces: Option<&CertificateDer<'_>>,
) -> Result<Obtained, Failure> {
    let mut validated = false;
    run(settings, challenges, replaces, &mut validated)
        .await
        .map_err(|error| Failure { error, validated })
}

async fn run(
    settings: &Acme,
    challenges: &Challenges,
    replaces: Option<&CertificateDer<'_>>,
    validated: &mut bool,
) -> anyhow::Result<Obtained> {
    let state = StateDir::new(&settings.state);
    let account = account(settings, &state).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|name| Identifier::Dns(name.clone()))
        .collect();
    let mut order = new_order(&account, &identifiers, replaces).await?;
    // Taken down when the order ends, however it ends.
    let mut answers = Answers {
        challenges,
        state: &state,
        http: Vec::new(),
        alpn: Vec::new(),
    };
    let kind = match settings.challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.context("cannot fetch an authorization")?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => bail!("an authorization is {other:?}"),
        }
        let mut challenge = authorization
            .challenge(kind.clone())
            .ok_or_else(|| anyhow!("the CA offers no {} challenge", settings.challenge.as_str()))?;
        let name = challenge.identifier().to_string().to_ascii_lowercase();
        let key_authorization = challenge.key_authorization();
        match settings.challenge {
            AcmeChallenge::Http01 => {
                answers.http(&challenge.token, key_authorization.as_str())?;
            }
            AcmeChallenge::TlsAlpn01 => {
                answers.alpn(&name, key_authorization.digest().as_ref())?;
            }
        }
        *validated = true;
        challenge
            .set_ready()
            .await
            .with_context(|| format!("the CA would not check {name}"))?;
    }
    let retries = RetryPolicy::new().timeout(VALIDATION_TIMEOUT);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        let problem = order
            .state()
            .error
            .as_ref()
            .map(|problem| format!(": {problem}"))
            .unwrap_or_default();
        bail!("the order is {status:?} instead of ready{problem}");
    }
    let key = KeyPair::generate().context("cannot make a key")?;
    let mut params = CertificateParams::new(settings.domains.clone())?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await.context("finalize")?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .context("the CA did not issue")?;
    Ok(Obtained {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// A new order, naming the certificate it replaces where the CA takes
/// that. Without ARI, or when the CA refuses the order with the field (the
/// certificate was replaced already, say: RFC 9773 §5) or does not
/// reflect it, the order goes again without it; a CA that cannot be
/// reached is not asked twice.
async fn new_order(
    account: &Account,
    identifiers: &[Identifier],
    replaces: Option<&CertificateDer<'_>>,
) -> anyhow::Result<instant_acme::Order> {
    if let Some(id) = replaces.and_then(|leaf| CertificateIdentifier::try_from(leaf).ok()) {
        match account
            .new_order(&NewOrder::new(identifiers).replaces(id))
            .await
        {
            Ok(order) => return Ok(order),
            Err(instant_acme::Error::Unsupported(_)) => {}
            Err(
                error @ (instant_acme::Error::Http(_)
                | instant_acme::Error::Hyper(_)
                | instant_acme::Error::Timeout(_)),
            ) => return Err(error).context("cannot reach the CA"),
            Err(error) => {
                tracing::info!(%error, "the CA refused an order naming the certificate it replaces; ordering without");
            }
        }
    }
    account
        .new_order(&NewOrder::new(identifiers))
        .await
        .context("the CA refused the order")
}

/// The CA's suggested renewal window for a certificate (RFC 9773), in
/// Unix seconds, and how long until it may be asked again.
pub struct RenewalWindow {
    pub start: i64,
    pub end: i64,
    pub ask_again: Duration,
}

/// What the CA suggests for `leaf`; `None` when it offers no renewal
/// information (then the two-thirds rule applies).
pub async fn renewal_window(
    settings: &Acme,
    leaf: &CertificateDer<'_>,
) -> anyhow::Result<Option<RenewalWindow>> {
    let account = account(settings, &StateDir::new(&settings.state)).await?;
    let id = CertificateIdentifier::try_from(leaf).map_err(|e| anyhow!(e))?;
    match account.renewal_info(&id).await {
        Ok((info, ask_again)) => Ok(Some(RenewalWindow {
            start: info.suggested_window.start.unix_timestamp(),
            end: info.suggested_window.end.unix_timestamp(),
            ask_again,
        })),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(error) => Err(error).context("the CA's renewal information"),
    }
}

/// The account for the CA: the stored one, or a new one stored at once.
async fn account(settings: &Acme, state: &StateDir) -> anyhow::Result<Account> {
    let builder = || match &settings.directory_ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    let file = state.account(&settings.directory);
    let contact = settings
        .email
        .as_ref()
        .map(|email| format!("mailto:{email}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let contact_file = file.with_extension("contact");
    match std::fs::read(&file) {
        Ok(json) => {
            let credentials: AccountCredentials = serde_json::from_slice(&json)
                .with_context(|| format!("{} is not an account", file.display()))?;
            let account = builder()?
                .from_credentials(credentials)
                .await
                .with_context(|| format!("cannot reach the CA at {}", settings.directory))?;
            update_contact(&account, &contact, &contact_file).await;
            return Ok(account);
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).context(format!("cannot read {}", file.display())),
    }
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .with_context(|| format!("cannot open an account at {}", settings.directory))?;
    write_secret(&file, &serde_json::to_vec(&credentials)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    record_contact(&contact_file, &contact.join("\n"));
    tracing::info!(directory = %settings.directory, "ACME account opened");
    Ok(account)
}

/// Tells the CA about an `email` changed since the account was opened (or
/// last told), as certbot's `update_account` does, so its expiry and
/// policy mail reach the address in the config. The account goes on
/// being used if the CA will not take it.
async fn update_contact(account: &Account, contact: &[&str], file: &std::path::Path) {
    let told = contact.join("\n");
    match std::fs::read_to_string(file) {
        Ok(stored) if stored == told => return,
        // An account opened before contacts were recorded, and no email to
        // tell: nothing to send, and an empty list would clear the CA's.
        Err(_) if contact.is_empty() => return record_contact(file, &told),
        _ => {}
    }
    match account.update_contacts(contact).await {
        Ok(()) => {
            record_contact(file, &told);
            tracing::info!(contact = %contact.join(","), "ACME account contact updated");
        }
        Err(error) => {
            tracing::warn!(%error, "the CA would not update the ACME account's contact; it keeps the old one");
        }
    }
}

/// The challenge answers an order has put up.
struct Answers<'a> {
    challenges: &'a Challenges,
    state: &'a StateDir,
    http: Vec<String>,
    alpn: Vec<String>,
}

impl Answers<'_> {
    /// In memory for this process, and in the state directory for replicas
    /// behind the same load balancer.
    fn http(&mut self, token: &str, key_authorization: &str) -> anyhow::Result<()> {
        let file = self
            .state
            .http_token(token)
            .ok_or_else(|| anyhow!("the CA sent a token that is not base64url"))?;
        write_secret(&file, key_authorization.as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
        self.challenges.put_http(token, key_authorization);
        self.http.push(token.to_owned());
        Ok(())
    }

    /// A self-signed certificate for `name` carrying the digest (RFC 8737 §3).
    fn alpn(&mut self, name: &str, digest: &[u8]) -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = tls::provider().key_provider.load_private_key(der)?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing);
        self.challenges.alpn.insert(name, Arc::new(certified));
        self.alpn.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        for token in &self.http {
            self.challenges.remove_http(token);
            if let Some(file) = self.state.http_token(token) {
                let _ = std::fs::remove_file(file);
            }
        }
        for name in &self.alpn {
            self.challenges.alpn.remove(name);
        }
    }
}

/// Keeps the contact the CA was told, to tell it again only when it changes.
fn record_contact(file: &std::path::Path, told: &str) {
    if let Err(error) = write_secret(file, told.as_bytes()) {
        tracing::warn!(file = %file.display(), %error, "cannot record the ACME account's contact");
    }
}
