-- Glimpse control plane, version 1: the rows glimpse-store's ControlStore
-- keeps (the same bytes the embedded redb store keeps), shared by every
-- collector of one service. Text keys compare byte-wise (COLLATE "C"), as
-- the embedded store orders them.
--
-- Applied by `glimpse-collector migrate`, in one transaction, recorded in
-- glimpse_migrations. Never edit a released migration: add the next one.

-- Collector-wide metadata: the master key check.
CREATE TABLE glimpse_meta (
    name  text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

-- (organisation, device) -> the registry's encoded row (kind, wrapped
-- shared key, certificate serial, revoked).
CREATE TABLE glimpse_devices (
    org    text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    row    bytea NOT NULL,
    PRIMARY KEY (org, device)
);

-- The OpenSSH public key line a switch or gateway logs in with.
CREATE TABLE glimpse_device_ssh_keys (
    org    text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    line   text NOT NULL,
    PRIMARY KEY (org, device)
);

-- Per-device stream sequence numbers: the highest batch durably stored.
-- A device that reconnects to another collector resumes from here.
-- Stream ids are u64 bit patterns stored as bigint; sequences stay below 2^63.
CREATE TABLE glimpse_stream_seq (
    org    text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    stream bigint NOT NULL,
    seq    bigint NOT NULL CHECK (seq >= 0),
    PRIMARY KEY (org, device, stream)
);

-- organisation -> its data key, wrapped under the master key.
CREATE TABLE glimpse_org_keys (
    org     text COLLATE "C" PRIMARY KEY,
    wrapped bytea NOT NULL
);

-- organisation -> its encoded decisions (consent, grants, data policy).
CREATE TABLE glimpse_org_policy (
    org text COLLATE "C" PRIMARY KEY,
    row bytea NOT NULL
);

-- Collector-wide facts: API tokens, console accounts, admin certificates,
-- the retention policy audited.
CREATE TABLE glimpse_state (
    name  text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

-- The audit chain, one line per entry, shared by every collector: an
-- append inserts seq = last + 1 and loses (and retries) if another
-- collector took it, so the chain stays linear.
CREATE TABLE glimpse_audit_lines (
    seq  bigint PRIMARY KEY CHECK (seq >= 1),
    line bytea NOT NULL
);

-- The audit chain head (sequence and MAC), written with every line.
CREATE TABLE glimpse_audit_head (
    id   smallint PRIMARY KEY CHECK (id = 1),
    head bytea NOT NULL
);

-- The segment catalog: what acknowledged batches put in each segment.
CREATE TABLE glimpse_segments (
    org  text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    day  bigint NOT NULL,
    name text COLLATE "C" NOT NULL,
    row  bytea NOT NULL,
    PRIMARY KEY (org, kind, day, name)
);

-- Changes other collectors must hear of at once (consent reaching devices,
-- a revocation closing connections, a token or account created): every
-- change to these rows notifies channel glimpse_changes, delivered when
-- its transaction commits, whoever wrote it (a collector or an operator's
-- SQL). Payload: "<what>:<key>" (p policy, d device, k org key, s state).
CREATE FUNCTION glimpse_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    key text;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_ARGV[0] = 'd' THEN
        key := r.org || '/' || r.device;
    ELSIF TG_ARGV[0] = 's' THEN
        key := r.name;
    ELSE
        key := r.org;
    END IF;
    PERFORM pg_notify('glimpse_changes', TG_ARGV[0] || ':' || left(key, 4000));
    RETURN NULL;
END;
$$;

CREATE TRIGGER glimpse_devices_changed AFTER INSERT OR UPDATE OR DELETE ON glimpse_devices
    FOR EACH ROW EXECUTE FUNCTION glimpse_notify_change('d');
CREATE TRIGGER glimpse_ssh_keys_changed AFTER INSERT OR UPDATE OR DELETE ON glimpse_device_ssh_keys
    FOR EACH ROW EXECUTE FUNCTION glimpse_notify_change('d');
CREATE TRIGGER glimpse_org_keys_changed AFTER INSERT OR UPDATE OR DELETE ON glimpse_org_keys
    FOR EACH ROW EXECUTE FUNCTION glimpse_notify_change('k');
CREATE TRIGGER glimpse_org_policy_changed AFTER INSERT OR UPDATE OR DELETE ON glimpse_org_policy
    FOR EACH ROW EXECUTE FUNCTION glimpse_notify_change('p');
CREATE TRIGGER glimpse_state_changed AFTER INSERT OR UPDATE OR DELETE ON glimpse_state
    FOR EACH ROW EXECUTE FUNCTION glimpse_notify_change('s');
