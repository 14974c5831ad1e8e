# Root's login shell: the usual profile, then rescue on the local consoles (not over SSH).
# Quitting rescue leaves this shell.
[ -f ~/.profile ] && . ~/.profile
if [ "$SHLVL" = 1 ]; then
    case "$(tty)" in
        /dev/tty1 | /dev/ttyS0) rescue-console ;;
    esac
fi
