-- Up Migration
-- Who may call this KME, and in which role (docs/operators.md). A client certificate is known by its subject CN,
-- optionally pinned to one SHA-256 fingerprint; the CN names exactly one principal of one role: an SAE (the ETSI 014
-- API), an operator (the admin API), an auditor (the auditor API) or a peer KME (the KME-to-KME API). The KME seeds
-- this table from its config file at every start and operators change it through the admin API; every change is an
-- event of the custody log, in the same transaction.
--
-- A principal moves between active and suspended; revoked is final, and an ID or a CN, once used, is never given to
-- another principal (a revoked SAE's old certificate must never authenticate as someone new). Rows are never deleted.
-- `change_seq` grows with every insert and update: a KME compares count and sum to notice a change made elsewhere
-- (another replica, another `kms` process) without reading the table.
CREATE SEQUENCE principal_change_seq AS bigint;

CREATE TABLE principal (
  role               text NOT NULL CHECK (role IN ('sae', 'operator', 'auditor', 'peer')),
  id                 text NOT NULL CHECK (id ~ '^[A-Za-z0-9._~-]{1,64}$'),
  certificate_cn     text NOT NULL UNIQUE CHECK (certificate_cn <> ''),
  certificate_sha256 text CHECK (certificate_sha256 ~ '^[0-9A-F]{64}$'),
  status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'revoked')),
  -- SAEs only: the SAEs it may share keys with (as master or slave); NULL: any SAE of the network.
  allowed_peers      text[] CHECK (role = 'sae' OR allowed_peers IS NULL),
  tags               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tags) = 'object'),
  source             text NOT NULL CHECK (source IN ('config', 'admin')),
  -- A principal of the config file that the file no longer lists: admitted nowhere, its record kept.
  unlisted           boolean NOT NULL DEFAULT false CHECK (source = 'config' OR NOT unlisted),
  created_at         timestamptz NOT NULL DEFAULT now(),
  changed_at         timestamptz NOT NULL DEFAULT now(),
  change_seq         bigint NOT NULL DEFAULT nextval('principal_change_seq'),
  PRIMARY KEY (role, id)
);

CREATE FUNCTION principal_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'principal %/% cannot be deleted: revoke it', OLD.role, OLD.id;
  END IF;
  IF NEW.role <> OLD.role OR NEW.id <> OLD.id THEN
    RAISE EXCEPTION 'principal %/%: role and ID never change', OLD.role, OLD.id;
  END IF;
  IF OLD.status = 'revoked' AND NEW.status <> 'revoked' THEN
    RAISE EXCEPTION 'principal %/% is revoked: revocation is final', OLD.role, OLD.id;
  END IF;
  NEW.change_seq := nextval('principal_change_seq');
  NEW.changed_at := now();
  RETURN NEW;
END
$$;
CREATE TRIGGER principal_guard BEFORE UPDATE OR DELETE ON principal
  FOR EACH ROW EXECUTE FUNCTION principal_guard();
