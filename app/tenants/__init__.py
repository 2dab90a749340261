"""Tenants: API keys kept hashed in Valkey, and each tenant's limits and quotas."""

from .keys import ApiKeyRecord, KeyStore
from .quotas import QuotaExceeded, TenantQuotas, blob_charge, file_charge, state_charge

__all__ = ["ApiKeyRecord", "KeyStore", "QuotaExceeded", "TenantQuotas", "blob_charge",
           "file_charge", "state_charge"]
