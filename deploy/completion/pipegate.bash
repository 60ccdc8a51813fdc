# bash completion for pipegate(1) and pipegated(8).
#
# Installed as /usr/share/bash-completion/completions/pipegate (bash-completion loads it the
# first time either command is completed; the copy named pipegated is the same file). It needs
# nothing from bash-completion itself, so it also works when sourced on its own:
#   source deploy/completion/pipegate.bash
#
# pipegate: the commands; before a command, the global and common options; after it, the
# common options and the command's own; option values where they are a closed set (--as,
# --log-format), files for --cert, --key and --ca, users and groups for --owner and --group,
# and files for the local path of mount. Addresses are not guessed: only the pipe:// prefix.

# The options every pipegate command takes (bridge-client/main.cc, AddCommonFlags).
_pipegate_common_opts="--cert --key --ca --servername --pin --wait --keepalive --resume-timeout
  -v --verbose --log-format -h --help"

# Prints the options of command $1 (empty: before any command).
_pipegate_opts() {
  case $1 in
    '') echo "$_pipegate_common_opts --version" ;;
    ls | stat) echo "$_pipegate_common_opts --json" ;;
    cat) echo "$_pipegate_common_opts --progress --follow --count --count-lines" ;;
    connect) echo "$_pipegate_common_opts --progress --messages" ;;
    write) echo "$_pipegate_common_opts --lines --progress" ;;
    mount) echo "$_pipegate_common_opts --as --lines --mode --owner --group" ;;
  esac
}

# Sets COMPREPLY to the words of $1 that start with $2.
_pipegate_words() {
  local IFS=$' \t\n'
  # shellcheck disable=SC2207  # Words never contain spaces here.
  COMPREPLY=($(compgen -W "$1" -- "$2"))
}

# Sets COMPREPLY to the files (and directories, to descend into) that start with $1.
_pipegate_files() {
  local IFS=$'\n'
  # shellcheck disable=SC2207  # One name per line; names with spaces stay whole.
  COMPREPLY=($(compgen -f -- "$1"))
  compopt -o filenames 2>/dev/null || true
}

# Completes the value of option $1 whose text so far is $2. Returns 1 if $1 takes no value.
_pipegate_value() {
  case $1 in
    --cert | --key | --ca | --config | -c | --check-config) _pipegate_files "$2" ;;
    --as) _pipegate_words "unix fifo" "$2" ;;
    --log-format) _pipegate_words "text json" "$2" ;;
    --messages) _pipegate_words "length lines" "$2" ;;
    --mode) _pipegate_words "0600 0640 0660 0666" "$2" ;;
    --owner)
      local IFS=$'\n'
      # shellcheck disable=SC2207
      COMPREPLY=($(compgen -u -- "$2"))
      ;;
    --group)
      local IFS=$'\n'
      # shellcheck disable=SC2207
      COMPREPLY=($(compgen -g -- "$2"))
      ;;
    --servername | --pin | --wait | --keepalive | --resume-timeout | --count | --count-lines)
      COMPREPLY=()
      ;;
    *) return 1 ;;
  esac
  return 0
}

# Splits COMP_WORDS the way the program sees its arguments: readline breaks words at ':' and
# '=' (COMP_WORDBREAKS), so "pipe://gw/x" arrives as "pipe" ":" "//gw/x" and "--as=unix" as
# "--as" "=" "unix". Sets _pipegate_args (the words before the cursor, rejoined), _pipegate_cur
# (the word under the cursor, rejoined) and _pipegate_cur_tail (the part of it after the last
# break, which is what COMPREPLY replaces).
_pipegate_rejoin() {
  _pipegate_args=()
  _pipegate_cur=""
  local i word joined="" glue=0
  for ((i = 1; i <= COMP_CWORD; i++)); do
    word=${COMP_WORDS[i]}
    if ((i < COMP_CWORD && i > 1)) && [[ $word =~ ^[:=]+$ ]]; then
      joined+=$word
      glue=1
      continue
    fi
    if ((glue)); then
      joined+=$word
      glue=0
    else
      ((i > 1)) && _pipegate_args+=("$joined")
      joined=$word
    fi
  done
  # The cursor word: a lone ":" or "=" just typed belongs to the word before it.
  _pipegate_cur=$joined
  _pipegate_cur_tail=${COMP_WORDS[COMP_CWORD]}
  if [[ $_pipegate_cur_tail =~ ^[:=]+$ ]]; then
    if ((${#_pipegate_args[@]} > 0)); then
      _pipegate_cur="${_pipegate_args[-1]}$_pipegate_cur_tail"
      unset '_pipegate_args[-1]'
    fi
    _pipegate_cur_tail=""
  fi
}

# Turns the candidates in COMPREPLY, each a whole cursor word, into what readline inserts: the
# part after the text that precedes the last word break ($_pipegate_cur minus its tail).
_pipegate_finish() {
  local before=${_pipegate_cur%"$_pipegate_cur_tail"} i
  [[ -z $before ]] && return 0
  for i in "${!COMPREPLY[@]}"; do
    COMPREPLY[i]=${COMPREPLY[i]#"$before"}
  done
}

# Completes "--opt=VALUE" in $_pipegate_cur: the value's candidates, each after "--opt=".
_pipegate_value_inline() {
  local opt=${_pipegate_cur%%=*} i
  _pipegate_value "$opt" "${_pipegate_cur#*=}" || COMPREPLY=()
  for i in "${!COMPREPLY[@]}"; do
    COMPREPLY[i]="$opt=${COMPREPLY[i]}"
  done
}

_pipegate() {
  COMPREPLY=()
  _pipegate_rejoin
  local cur=$_pipegate_cur
  local command="" positional=0 expect_value="" arg
  for arg in "${_pipegate_args[@]}"; do
    if [[ -n $expect_value ]]; then
      expect_value=""
      continue
    fi
    case $arg in
      --*=*) ;;
      --cert | --key | --ca | --servername | --pin | --wait | --keepalive | --resume-timeout | \
        --log-format | --as | --mode | --owner | --group | --messages | --count | --count-lines)
        expect_value=$arg
        ;;
      -*) ;;
      *)
        if [[ -z $command ]]; then
          command=$arg
        else
          positional=$((positional + 1))
        fi
        ;;
    esac
  done

  if [[ -n $expect_value ]]; then
    _pipegate_value "$expect_value" "$cur"
  elif [[ $cur == --*=* ]]; then
    _pipegate_value_inline
  elif [[ $cur == -* ]]; then
    _pipegate_words "$(_pipegate_opts "$command")" "$cur"
  elif [[ -z $command ]]; then
    _pipegate_words "ls stat cat write connect mount" "$cur"
  elif [[ ! $command =~ ^(ls|stat|cat|write|connect|mount)$ ]]; then
    :  # Not a command: nothing sensible to offer.
  elif ((positional == 0)); then
    # The address: only its scheme is known here.
    if [[ pipe:// == "$cur"* ]]; then
      COMPREPLY=("pipe://")
      compopt -o nospace 2>/dev/null || true
    fi
  elif [[ $command == mount ]] && ((positional == 1)); then
    _pipegate_files "$cur"
  fi
  _pipegate_finish
  return 0
}

_pipegated() {
  COMPREPLY=()
  _pipegate_rejoin
  local cur=$_pipegate_cur prev=""
  ((${#_pipegate_args[@]} > 0)) && prev=${_pipegate_args[-1]}
  if [[ $cur == --*=* ]]; then
    _pipegate_value_inline
  elif [[ $prev =~ ^(--config|-c|--check-config|--log-format)$ ]]; then
    _pipegate_value "$prev" "$cur"
  elif [[ $cur == -* ]]; then
    _pipegate_words "--config -c --check-config --log-format -v --verbose -q --quiet --version
      -h --help" "$cur"
  fi
  _pipegate_finish
  return 0
}

complete -F _pipegate pipegate
complete -F _pipegated pipegated
