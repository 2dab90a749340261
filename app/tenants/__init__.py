"""Tenants: API keys kept hashed in Valkey, and each tenant's limits and quotas."""

from .keys import ApiKeyRecord, KeyStore
from .quotas import QuotaExceeded, TenantQuotas

__all__ = ["ApiKeyRecord", "KeyStore", "QuotaExceeded", "TenantQuotas"]
