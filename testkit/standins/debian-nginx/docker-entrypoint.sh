#!/bin/sh
# Entrypoint of the nginx stand-in: renders /etc/nginx/templates/*.template into /etc/nginx/conf.d at start, as the
# official image's 20-envsubst-on-templates.sh does, then runs the command (nginx in the foreground by default).
#
# Only variables defined in the environment are substituted (envsubst is given their names), so nginx's own
# `$uri` or `$document_root` in a template stay as they are unless someone exports such a variable. The same
# NGINX_ENVSUBST_* settings as the official image choose the directories, the suffix and a name filter.
set -eu
me=$(basename "$0")

render_templates() {
  template_dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
  suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
  output_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
  filter=${NGINX_ENVSUBST_FILTER:-}

  [ -d "$template_dir" ] || return 0
  if [ ! -w "$output_dir" ]; then
    echo >&2 "$me: ERROR: $template_dir exists, but $output_dir is not writable: mount it read-write"
    return 0
  fi
  # Variable names only (awk's ENVIRON), never values: they reach envsubst as its list of names to replace.
  defined_envs=$(awk -v filter="$filter" 'END { for (name in ENVIRON) if (name ~ filter) printf "${%s} ", name }' </dev/null)
  find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
    relative_path=${template#"$template_dir/"}
    output_path=$output_dir/${relative_path%"$suffix"}
    mkdir -p "$(dirname "$output_path")"
    echo "$me: rendering $template to $output_path"
    envsubst "$defined_envs" <"$template" >"$output_path"
  done
}

# The default command and its option-only forms (`docker run IMAGE -t`) start nginx; anything else runs as is.
case "${1:-}" in
  nginx | nginx-debug) render_templates ;;
  -*)
    render_templates
    set -- nginx "$@"
    ;;
esac
exec "$@"
