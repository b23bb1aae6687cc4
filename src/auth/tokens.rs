//! Creating, listing and revoking tokens in PostgreSQL.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{valid_tenant, Scope};
use crate::clock;

/// Printed before the random part so a leaked token is recognisable in a scan.
const PREFIX: &str = "wlt_";

/// A token just created: `secret` is shown to the operator once and never stored.
pub struct NewToken {
    pub id: Uuid,
    pub secret: String,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The SHA-256 of a token, as stored and as looked up. Tokens carry 256 random bits, so a
/// fast unsalted hash is enough: there is nothing to guess from a dictionary.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub async fn create(
    client: &impl GenericClient,
    tenant: &str,
    scopes: &[Scope],
    name: &str,
) -> anyhow::Result<NewToken> {
    anyhow::ensure!(
        valid_tenant(tenant),
        "the tenant must be 1 to 64 letters, digits, '-' or '_'"
    );
    anyhow::ensure!(!scopes.is_empty(), "a token needs at least one scope");
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    let id = clock::new_token_id();
    let scopes: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
    client
        .execute(
            "INSERT INTO api_tokens (id, tenant, name, scopes, token_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &tenant, &name, &scopes, &hash(&secret), &clock::now()],
        )
        .await?;
    Ok(NewToken { id, secret })
}

pub async fn list(client: &impl GenericClient) -> anyhow::Result<Vec<TokenRecord>> {
    let rows = client
        .query(
            "SELECT id, tenant, name, scopes, created_at, revoked_at FROM api_tokens
             ORDER BY created_at, id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| TokenRecord {
            id: row.get(0),
            tenant: row.get(1),
            name: row.get(2),
            scopes: scopes(row, 3),
            created_at: row.get(4),
            revoked_at: row.get(5),
        })
        .collect())
}

/// Revokes a token; false when no live token has this id.
pub async fn revoke(client: &impl GenericClient, id: Uuid) -> anyhow::Result<bool> {
    let revoked = client
        .execute(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &clock::now()],
        )
        .await?;
    Ok(revoked == 1)
}

/// Every live token, by hash: what the registry serves requests from.
pub async fn live(client: &impl GenericClient) -> anyhow::Result<Vec<(Vec<u8>, super::Principal)>> {
    let rows = client
        .query(
            "SELECT token_hash, id, tenant, scopes FROM api_tokens WHERE revoked_at IS NULL",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let principal = super::Principal {
                token_id: row.get(1),
                tenant: row.get(2),
                scopes: scopes(row, 3),
            };
            (row.get(0), principal)
        })
        .collect())
}

fn scopes(row: &tokio_postgres::Row, index: usize) -> Vec<Scope> {
    row.get::<_, Vec<String>>(index)
        .iter()
        .filter_map(|scope| Scope::parse(scope))
        .collect()
}
