-- The top-level fields of a Segment message that Kept does not read (a page's `category`,
-- `channel`, `integrations`, ...), as the client sent them: kept, never dropped.
ALTER TABLE events ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
