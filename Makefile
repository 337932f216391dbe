# allocation: PGXS build
EXTENSION   = allocation
EXTVERSION  = 1.0
MODULE_big  = allocation
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA_built  = $(EXTENSION)--$(EXTVERSION).sql
DATA        = $(filter-out $(DATA_built),$(wildcard $(EXTENSION)--*--*.sql))
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

# one editable source per piece; the install script is assembled from them
$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard sql_src/*.sql))
	cat $^ > $@

# a header change rebuilds every object (the headers are small and included widely)
$(OBJS): $(wildcard src/*.h)
