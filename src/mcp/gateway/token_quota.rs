//! A client's daily token quota at the inference APIs (`tokensPerDay`): admission before a generation
//! starts, and the account its generations are charged to as they end. The counts live in the policy
//! beside the daily call quota; this file is the gateway's face of them for the chat pipeline, which
//! charges an account and knows nothing of clients or days.

use std::fmt;
use std::sync::Arc;

use super::super::McpError;
use super::super::policy::Caller;
use super::Gateway;

/// Where the tokens of one client's generations are counted (only clients with `tokensPerDay` have one).
#[derive(Clone)]
pub struct TokenAccount {
    gateway: Arc<Gateway>,
    client: Arc<str>,
}

impl fmt::Debug for TokenAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAccount")
            .field("client", &self.client)
            .finish()
    }
}

impl TokenAccount {
    /// The client charged.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// Counts `tokens` (prompt and completion) a generation of this client spent.
    pub fn spend(&self, tokens: u64) {
        if tokens == 0 {
            return;
        }
        self.gateway
            .setup()
            .policy
            .spend_tokens(&self.client, tokens);
        tracing::debug!(client = %self.client, tokens, "model tokens counted against the daily quota");
    }
}

impl Gateway {
    /// Admits a generation for `caller`: the account to charge (`None` for callers without a token
    /// quota), or `TokensSpent` until the next UTC midnight once the day's tokens are spent.
    pub fn admit_generation(
        self: &Arc<Self>,
        caller: &Caller,
    ) -> Result<Option<TokenAccount>, McpError> {
        let Caller::Client(client) = caller else {
            return Ok(None);
        };
        let Some(quota) = client.tokens_per_day else {
            return Ok(None);
        };
        self.setup()
            .policy
            .check_tokens(caller)
            .map_err(|retry_after| McpError::TokensSpent {
                client: client.name.clone(),
                quota,
                retry_after,
            })?;
        Ok(Some(TokenAccount {
            gateway: self.clone(),
            client: client.name.as_str().into(),
        }))
    }

    /// The account `caller`'s generations are charged to, without admission (the rounds of a tool loop
    /// admitted as one request).
    pub fn token_account(self: &Arc<Self>, caller: &Caller) -> Option<TokenAccount> {
        match caller {
            Caller::Client(client) if client.tokens_per_day.is_some() => Some(TokenAccount {
                gateway: self.clone(),
                client: client.name.as_str().into(),
            }),
            _ => None,
        }
    }
}
