-- Glimpse control plane, version 2: the configuration values sealed.
--
-- The values of the registry, devices' SSH keys, the organisations'
-- decisions and the collector state are stored AES-256-GCM sealed under
-- the configuration key (wrapped under the master key in glimpse_meta
-- 'config-key'), with the table and row key as associated data. This SQL
-- cannot seal (it has no key): it renames the value columns to `sealed`
-- (bytea), keeping the plain values as they are, and the first collector
-- that opens the database afterwards seals every value in one transaction
-- under an advisory lock and records glimpse_meta 'values-sealed' with
-- them (a crash leaves it all plain or all sealed; a second collector
-- starting at once waits and finds it done).
--
-- The renames also stop a collector of an earlier version still running
-- against this database: its statements name the old columns and fail,
-- instead of writing plain values among sealed ones.

ALTER TABLE glimpse_devices RENAME COLUMN row TO sealed;

ALTER TABLE glimpse_device_ssh_keys RENAME COLUMN line TO sealed;
ALTER TABLE glimpse_device_ssh_keys ALTER COLUMN sealed TYPE bytea USING convert_to(sealed, 'UTF8');

ALTER TABLE glimpse_org_policy RENAME COLUMN row TO sealed;

ALTER TABLE glimpse_state RENAME COLUMN value TO sealed;
ALTER TABLE glimpse_state ALTER COLUMN sealed TYPE bytea USING convert_to(sealed, 'UTF8');

-- A master key rotation rewrites every organisation key, registry row and
-- state entry in one transaction; the keys inside do not change, so other
-- collectors need not drop what they hold. The rotation sets glimpse.quiet
-- in its transaction and the triggers stay silent for it (it sends one
-- 'm:master-key-rotated' note instead).
CREATE OR REPLACE FUNCTION glimpse_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    key text;
BEGIN
    IF current_setting('glimpse.quiet', true) = 'on' THEN
        RETURN NULL;
    END IF;
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
