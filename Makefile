# allocation: PGXS build
EXTENSION   = allocation
EXTVERSION  = 1.1
MODULE_big  = allocation
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA_built  = $(EXTENSION)--$(EXTVERSION).sql
# frozen scripts of released versions and the upgrade scripts between them
# (kept in the repository, never edited); the default version is built
DATA        = $(filter-out $(DATA_built),$(wildcard $(EXTENSION)--*.sql))
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS   = -Wall -Wmissing-prototypes -Wpointer-arith -Wendif-labels -Wformat-security -Wno-format-truncation

REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=postgis
ISOLATION    = $(patsubst specs/%.spec,%,$(sort $(wildcard specs/*.spec)))
ISOLATION_OPTS = --load-extension=postgis

EXTRA_CLEAN = $(DATA_built)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# one editable source per piece; the default version's install script is
# assembled from them (released versions are frozen files: see README
# "Contributing")
$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard sql_src/*.sql))
	cat $^ > $@

# a header change rebuilds every object (the headers are small and included widely)
$(OBJS): $(wildcard src/*.h)
